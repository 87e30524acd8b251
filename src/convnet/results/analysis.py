"""The analysis of a sweep's results: configurations over seeds, the Pareto front, the sweet spot.

Pure functions on plain data (the records of ``results.jsonl``); ``convnet.report`` writes them out.
A configuration is a trial without its seed (each record's ``configuration``); its figures are means ± sample standard deviations over
its completed seeds (one seed: ``n=1``, spread unknown). A configuration at chance accuracy (below
twice 1/num_classes) is never the sweet spot.
"""

from collections.abc import Mapping, Sequence
import dataclasses
import statistics
from typing import Any

from convnet.errors import ConfigError, DataError

RULES = ("within_std", "within_tolerance")
CHANCE_FACTOR = 2  # below twice the chance accuracy, a configuration is never the sweet spot


@dataclasses.dataclass(frozen=True)
class ConfigResult:
  """One configuration (a trial without its seed), over its completed seeds."""

  name: str
  trials: tuple[str, ...]
  seeds: tuple[int, ...]
  accuracy_mean: float
  accuracy_std: float
  seconds_mean: float  # per epoch, compilation excluded
  seconds_std: float
  examples_per_second: float
  num_params: int
  flops_per_example: int
  flatten_size: int
  num_classes: int = 0  # 0: not recorded

  @property
  def at_chance(self) -> bool:
    """Whether its accuracy is within reach of guessing: below twice the chance rate (1/num_classes)."""
    return bool(self.num_classes) and self.accuracy_mean < CHANCE_FACTOR / self.num_classes


def _std(values: Sequence[float]) -> float:
  return statistics.stdev(values) if len(values) > 1 else 0.0


def aggregate(results: Sequence[Mapping[str, Any]], status: str = "completed") -> list[ConfigResult]:
  """Mean ± std over seeds of each configuration's completed trials (or those of another ``status``,
  e.g. ``'pruned'``: their figures at the epoch they stopped), in first-seen order."""
  groups: dict[str, list[Mapping[str, Any]]] = {}
  for r in results:
    if r.get("status") == status:
      groups.setdefault(r["configuration"], []).append(r)
  rows = []
  for name, trials in groups.items():
    accuracy = [t["test_accuracy"] for t in trials]
    seconds = [t["epoch_seconds"] for t in trials]
    rows.append(
      ConfigResult(
        name=name,
        trials=tuple(t["name"] for t in trials),
        seeds=tuple(t.get("seed", 0) for t in trials),
        accuracy_mean=statistics.fmean(accuracy),
        accuracy_std=_std(accuracy),
        seconds_mean=statistics.fmean(seconds),
        seconds_std=_std(seconds),
        examples_per_second=statistics.fmean(t["examples_per_second"] for t in trials),
        num_params=int(trials[0]["num_params"]),
        flops_per_example=int(trials[0]["flops_per_example"]),
        flatten_size=int(trials[0].get("flatten_size", 0)),
        num_classes=int(trials[0].get("num_classes") or 0),
      )
    )
  return rows


def pareto_front(rows: Sequence[ConfigResult]) -> list[ConfigResult]:
  """Configurations no other beats on both mean accuracy (higher) and seconds per epoch (lower); fastest first."""

  def dominated(a: ConfigResult) -> bool:
    return any(
      b.accuracy_mean >= a.accuracy_mean
      and b.seconds_mean <= a.seconds_mean
      and (b.accuracy_mean > a.accuracy_mean or b.seconds_mean < a.seconds_mean)
      for b in rows
    )

  return sorted((r for r in rows if not dominated(r)), key=lambda r: r.seconds_mean)


def accuracy_text(row: ConfigResult) -> str:
  """'91.17% ± 0.32' over several seeds; '91.17% (n=1)' for one, whose spread is unknown, not zero."""
  spread = f"± {100 * row.accuracy_std:.2f}" if len(row.seeds) > 1 else "(n=1)"
  return f"{100 * row.accuracy_mean:.2f}% {spread}"


def sweet_spot(
  rows: Sequence[ConfigResult], rule: str = "within_std", tolerance: float = 0.005
) -> tuple[ConfigResult, str]:
  """The fastest configuration whose mean accuracy is close enough to the best; and the rule in words."""
  if rule not in RULES:
    raise ConfigError(f"sweep.report.rule={rule!r} is not allowed; use one of {RULES}")
  if not rows:
    raise DataError("no completed trials to choose a sweet spot from")
  rows = [r for r in rows if not r.at_chance]
  if not rows:
    raise DataError("no sweet spot: every configuration's test accuracy is at chance (it learned nothing)")
  best = max(rows, key=lambda r: r.accuracy_mean)
  if rule == "within_std":
    eligible = [
      r for r in rows if best.accuracy_mean - r.accuracy_mean <= max(r.accuracy_std, best.accuracy_std) + 1e-12
    ]
    why = (
      f"within one standard deviation over seeds (the larger of its own and the best's) of the best mean "
      f"accuracy ({best.name}: {accuracy_text(best)})"
    )
  else:
    eligible = [r for r in rows if best.accuracy_mean - r.accuracy_mean <= tolerance + 1e-12]
    why = f"within {100 * tolerance:.2f} points (sweep.report.tolerance) of the best mean accuracy ({best.name}: {100 * best.accuracy_mean:.2f}%)"
  chosen = min(eligible, key=lambda r: (r.seconds_mean, -r.accuracy_mean))
  return chosen, f"the fastest configuration (seconds per epoch) whose mean test accuracy is {why}"


def check_rule(settings: Mapping[str, Any]) -> None:
  """ConfigError naming a bad ``sweep.report`` field and what is allowed."""
  if settings.get("rule", "within_std") not in RULES:
    raise ConfigError(f"sweep.report.rule={settings.get('rule')!r} is not allowed; use one of {RULES}")
  tolerance = settings.get("tolerance", 0.005)
  if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or tolerance < 0:
    raise ConfigError(f"sweep.report.tolerance={tolerance!r}: give an accuracy difference >= 0, e.g. 0.005")


def report_settings(config: Mapping[str, Any]) -> dict[str, Any]:
  """A sweep config's ``sweep.report`` settings (how the sweet spot is chosen)."""
  return dict((config.get("sweep") or {}).get("report") or {})


def chosen_sweet_spot(rows: Sequence[ConfigResult], config: Mapping[str, Any]) -> tuple[ConfigResult | None, str]:
  """The sweet spot by the config's ``sweep.report`` rule and the rule in words; or None and why there is none."""
  settings = report_settings(config)
  try:
    return sweet_spot(rows, settings.get("rule", "within_std"), settings.get("tolerance", 0.005))
  except DataError as e:
    return None, str(e)


@dataclasses.dataclass(frozen=True)
class Pruned:
  """A configuration that Pareto pruning stopped: where, why, and its figures there (over its seeds)."""

  row: ConfigResult  # accuracy and s/epoch at the epoch it stopped
  epoch: int
  by: str
  accuracy_lead: float  # by's mean accuracy minus this one's, at that epoch
  margin: float
  speedup: float  # this one's s/epoch over by's


def pruned(results: Sequence[Mapping[str, Any]]) -> list[Pruned]:
  """The pruned configurations of a sweep's results, in the order they were stopped."""
  first = {}
  for r in results:
    if r.get("status") == "pruned":
      first.setdefault(r["configuration"], r)
  rows = {row.name: row for row in aggregate(results, "pruned")}
  return [
    Pruned(rows[name], int(r["pruned_at"]), r["pruned_by"], r["accuracy_lead"], r["prune_margin"], r["speedup"])
    for name, r in first.items()
  ]


def trial_epochs(results: Sequence[Mapping[str, Any]], num_epochs: int) -> tuple[int, int]:
  """(epochs trained, epochs the full grid trains) over the trials that trained (completed or pruned)."""
  trained = [r for r in results if r.get("status") in ("completed", "pruned")]
  return sum(int(r.get("epoch", 0)) for r in trained), num_epochs * len(trained)
