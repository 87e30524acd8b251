"""A sweep's progress in the log: how long it has run, and how long the rest will take."""


def estimate_seconds(done: list[tuple[float, float]], remaining: list[float]) -> float | None:
  """Seconds left, from (FLOPs, seconds) of finished trials: a least-squares line time = a + b * FLOPs.

  Small trials are dominated by fixed costs (data, compilation, evaluation), so a plain FLOP rate
  from them overestimates the big ones and a plain mean underestimates them.
  """
  if not done:
    return None
  flops = [f for f, _ in done]
  seconds = [t for _, t in done]
  mean_f, mean_t = sum(flops) / len(flops), sum(seconds) / len(seconds)
  spread = sum((f - mean_f) ** 2 for f in flops)
  if not spread:  # one size seen so far: assume time grows in proportion to FLOPs
    slope = mean_t / mean_f if mean_f else 0.0
    return sum(slope * f for f in remaining)
  slope = max(0.0, sum((f - mean_f) * (t - mean_t) for f, t in done) / spread)
  intercept = max(0.0, mean_t - slope * mean_f)
  return sum(intercept + slope * f for f in remaining)


def hms(seconds: float) -> str:
  seconds = int(round(seconds))
  return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
