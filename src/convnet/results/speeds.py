"""What "fast" means (``sweep.report.speed``): the cost each configuration is traded against accuracy.

* ``train_time`` (the default): median seconds per training epoch (compilation excluded);
* ``latency``: batch-1 inference latency, ms (``convnet.inference``: measured after training);
* ``throughput``: inference images per second at ``inference.batch_size``; its cost is the time per
  image, 1 / throughput;
* ``flops``: forward FLOPs per image; ``params``: parameters (both exact, no timing noise).

A cost is lower-is-better and positive, so that the exchange-rate rule's "a doubling of the cost" means
the same for each. Timed costs carry their noise over seeds into the answer's draws
(``convnet.results.confidence``), as seconds per epoch always did.
"""

from collections.abc import Mapping
from typing import Any

# sweep.report.speed: what "fast" means. name: (the result field, its cost in words; lower is better)
SPEEDS = {
  "train_time": ("epoch_seconds", "seconds per epoch"),
  "latency": ("latency_ms", "batch-1 inference latency"),
  "throughput": ("throughput", "inference time per image at a large batch (1 / throughput)"),
  "flops": ("flops_per_example", "FLOPs per image"),
  "params": ("num_params", "parameters"),
}
DEFAULT_SPEED = "train_time"
AXIS_LABELS = {
  "train_time": "seconds per epoch (compilation excluded; log scale)",
  "latency": "batch-1 inference latency, ms (compilation excluded; log scale)",
  "throughput": "seconds per image at a large batch: 1 / throughput (log scale)",
  "flops": "forward FLOPs per image (log scale)",
  "params": "parameters (log scale)",
}


def speed_cost(record: Mapping[str, Any], speed: str = DEFAULT_SPEED) -> float | None:
  """A trial's cost under ``speed`` (lower is better; throughput's is 1 / throughput), or None: not recorded."""
  value = record.get(SPEEDS[speed][0])
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
    return None
  return 1.0 / value if speed == "throughput" else float(value)


def speed_text(speed: str, cost: float) -> str:
  """A cost as a reader expects it: '11.13 s/epoch', '0.190 ms', '6,912 images/s', '9.97 MFLOP', '243,786 params'."""
  if speed == "train_time":
    return f"{cost:.2f} s/epoch"
  if speed == "latency":
    return f"{cost:.3f} ms"
  if speed == "throughput":
    return f"{1 / cost:,.0f} images/s"
  if speed == "flops":
    return f"{cost / 1e6:.2f} MFLOP"
  return f"{cost:,.0f} params"


def speed_of(config: Mapping[str, Any]) -> str:
  """What "fast" means for a sweep config (``sweep.report.speed``; train_time for sweeps recorded before it)."""
  return ((config.get("sweep") or {}).get("report") or {}).get("speed", DEFAULT_SPEED)
