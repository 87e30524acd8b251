"""The analysis of a sweep's results: configurations over seeds, the Pareto front, the sweet spot.

Pure functions on plain data (the records of ``results.jsonl``); ``convnet.report`` writes them out.
A configuration is a trial without its seed (each record's ``configuration``); its figures are means ±
sample standard deviations over its completed seeds (one seed: ``n=1``, spread unknown). A
configuration at chance accuracy (below twice 1/num_classes) is never the sweet spot.

Every decision reads **validation** accuracy (:data:`DECIDES`: images held out of training,
``dataset.validation_size``); test accuracy is carried along and reported, and decides nothing. Sweeps
recorded before the validation split have test accuracy only; :func:`accuracy_key` then falls back to
it, and the report says so.

The sweet spot (:func:`sweet_spot`, ``sweep.report.rule``):

* ``exchange_rate`` (the default): the configuration with the largest ``accuracy - per_doubling x
  log2(seconds per epoch)``: a network twice as slow must be ``per_doubling`` more accurate (default
  0.005, half a point) to be preferred. It answers "where does more network stop paying?": along the
  front, the answer is where the gain per doubling of time falls below the rate (the point where a
  line of that slope touches the front in (log2 time, accuracy)). On log time, a machine k times faster
  for every network gives the same answer.
* ``within_std``: the fastest configuration within one standard deviation over seeds of the best mean;
* ``within_tolerance``: the fastest within ``tolerance`` of the best mean.

"Fast" is ``sweep.report.speed`` (:data:`SPEEDS`): seconds per training epoch (the default), batch-1
inference latency, inference throughput (its cost: seconds per image, 1 / throughput), FLOPs per image
or parameters. Each configuration's ``cost_*`` figures are that measure (lower is better); the front,
the sweet spot and the draws read them, while ``seconds_*`` stay seconds per epoch for every table.
"""

from collections.abc import Mapping, Sequence
import dataclasses
import math
import statistics
from typing import Any

import numpy as np

from convnet.errors import ConfigError, DataError
from convnet.results.speeds import DEFAULT_SPEED, SPEEDS, speed_cost

DECIDES = "validation_accuracy"  # the accuracy every decision reads
REPORTS = "test_accuracy"  # measured and reported, never read by a decision
RULES = ("exchange_rate", "within_std", "within_tolerance")
DEFAULT_RULE = "exchange_rate"
RECORDED_DEFAULT_RULE = "within_std"  # the rule of sweeps recorded before sweep.report.rule was written down
PER_DOUBLING = 0.005  # exchange_rate: accuracy a doubling of seconds per epoch must buy (half a point)
CHANCE_FACTOR = 2  # below twice the chance accuracy, a configuration is never the sweet spot


def accuracy_key(results: Sequence[Mapping[str, Any]]) -> str:
  """The accuracy that decisions read in these records: validation; test only in sweeps recorded
  before the validation split (none of their trained records has validation accuracy)."""
  trained = [r for r in results if r.get("status") in ("completed", "pruned")]
  if trained and not any(DECIDES in r for r in trained):
    return REPORTS
  return DECIDES


def split_name(key: str) -> str:
  """'validation' or 'test': the split an accuracy key is on."""
  return key.removesuffix("_accuracy")


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
  accuracies: tuple[float, ...] = ()  # each seed's accuracy on the deciding split (accuracy_mean's values)
  seconds: tuple[float, ...] = ()  # each seed's median s/epoch
  test_accuracy_mean: float | None = None  # reported only (None: not recorded)
  test_accuracy_std: float | None = None
  split: str = "validation"  # the split accuracy_mean is on: 'validation', or 'test' in older sweeps
  overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # its swept values (seed left out)
  speed: str = DEFAULT_SPEED  # what "fast" means for its cost figures (SPEEDS)
  cost_mean: float | None = None  # mean, std and each seed's cost (None: seconds per epoch's, train_time)
  cost_std: float | None = None
  costs: tuple[float, ...] | None = None
  latency_ms: float | None = None  # mean batch-1 inference latency over seeds (None: not recorded)
  throughput: float | None = None  # mean inference images per second

  def __post_init__(self):
    if self.cost_mean is None:  # the cost is seconds per epoch unless given
      object.__setattr__(self, "cost_mean", self.seconds_mean)
      object.__setattr__(self, "cost_std", self.seconds_std)
      object.__setattr__(self, "costs", self.seconds)

  @property
  def at_chance(self) -> bool:
    """Whether its accuracy is within reach of guessing: below twice the chance rate (1/num_classes)."""
    return bool(self.num_classes) and self.accuracy_mean < CHANCE_FACTOR / self.num_classes


def _std(values: Sequence[float]) -> float:
  return statistics.stdev(values) if len(values) > 1 else 0.0


def _mean_of(trials: Sequence[Mapping[str, Any]], field: str) -> float | None:
  return None if any(t.get(field) is None for t in trials) else statistics.fmean(t[field] for t in trials)


def aggregate(
  results: Sequence[Mapping[str, Any]], status: str = "completed", speed: str = DEFAULT_SPEED
) -> list[ConfigResult]:
  """Mean ± std over seeds of each configuration's completed trials (or those of another ``status``,
  e.g. ``'pruned'``: their figures at the epoch they stopped), in first-seen order; their costs under
  ``speed`` (DataError naming a configuration that has not recorded it)."""
  if speed not in SPEEDS:
    raise ConfigError(f"sweep.report.speed={speed!r} is not allowed; use one of {tuple(SPEEDS)}")
  groups: dict[str, list[Mapping[str, Any]]] = {}
  for r in results:
    if r.get("status") == status:
      groups.setdefault(r["configuration"], []).append(r)
  key = accuracy_key(results)
  rows = []
  for name, trials in groups.items():
    accuracy = [t[key] for t in trials]
    seconds = [t["epoch_seconds"] for t in trials]
    tested = [t[REPORTS] for t in trials if REPORTS in t]
    costs = [speed_cost(t, speed) for t in trials]
    if None in costs:
      raise DataError(
        f"sweep.report.speed={speed}: {name} has no {SPEEDS[speed][0]} recorded (trained before it was measured, "
        "or with inference.seconds=0); choose another speed (train_time, flops, params are always recorded)"
      )
    rows.append(
      ConfigResult(
        name=name,
        trials=tuple(t["name"] for t in trials),
        seeds=tuple(t.get("seed", 0) for t in trials),
        accuracy_mean=statistics.fmean(accuracy),
        accuracy_std=_std(accuracy),
        seconds_mean=statistics.fmean(seconds),
        seconds_std=_std(seconds),
        examples_per_second=statistics.fmean(t.get("examples_per_second", 0.0) for t in trials),
        num_params=int(trials[0].get("num_params", 0)),  # 0: a trial stopped before its summary was written
        flops_per_example=int(trials[0].get("flops_per_example", 0)),
        flatten_size=int(trials[0].get("flatten_size", 0)),
        num_classes=int(trials[0].get("num_classes") or 0),
        accuracies=tuple(accuracy),
        seconds=tuple(seconds),
        test_accuracy_mean=statistics.fmean(tested) if len(tested) == len(trials) else None,
        test_accuracy_std=_std(tested) if len(tested) == len(trials) else None,
        split=split_name(key),
        overrides={k: v for k, v in (trials[0].get("overrides") or {}).items() if k != "seed"},
        speed=speed,
        cost_mean=statistics.fmean(costs),
        cost_std=_std(costs),
        costs=tuple(costs),
        latency_ms=_mean_of(trials, "latency_ms"),
        throughput=_mean_of(trials, "throughput"),
      )
    )
  return rows


def pareto_front(rows: Sequence[ConfigResult]) -> list[ConfigResult]:
  """Configurations no other beats on both mean accuracy (higher) and cost (lower: seconds per epoch, or
  the rows' speed); fastest first."""

  def dominated(a: ConfigResult) -> bool:
    return any(
      b.accuracy_mean >= a.accuracy_mean
      and b.cost_mean <= a.cost_mean
      and (b.accuracy_mean > a.accuracy_mean or b.cost_mean < a.cost_mean)
      for b in rows
    )

  return sorted((r for r in rows if not dominated(r)), key=lambda r: r.cost_mean)


def accuracy_text(row: ConfigResult) -> str:
  """'91.17% ± 0.32' over several seeds; '91.17% (n=1)' for one, whose spread is unknown, not zero."""
  spread = f"± {100 * row.accuracy_std:.2f}" if len(row.seeds) > 1 else "(n=1)"
  return f"{100 * row.accuracy_mean:.2f}% {spread}"


def test_text(row: ConfigResult) -> str:
  """The row's test accuracy like :func:`accuracy_text` ('not recorded' where it is not)."""
  if row.test_accuracy_mean is None:
    return "not recorded"
  spread = f"± {100 * row.test_accuracy_std:.2f}" if len(row.seeds) > 1 else "(n=1)"
  return f"{100 * row.test_accuracy_mean:.2f}% {spread}"


def choose(
  accuracy: np.ndarray, seconds: np.ndarray, std: np.ndarray, rule: str, tolerance: float, per_doubling: float
) -> np.ndarray:
  """The rule's pick (a column index) in each row of ``accuracy`` and ``seconds`` (draws x configurations,
  mean figures; ``std``: each configuration's std over seeds). Ties go to the faster, then the first."""
  if rule == "exchange_rate":
    value = accuracy - per_doubling * np.log2(np.maximum(seconds, 1e-9))  # a 0 s timing (a tiny test run) stays finite
    best = value.max(axis=1, keepdims=True)
    eligible = value >= best - 1e-12
  else:
    best_index = accuracy.argmax(axis=1)
    best = np.take_along_axis(accuracy, best_index[:, None], axis=1)
    if rule == "within_std":
      slack = np.maximum(std[None, :], std[best_index][:, None])
    else:
      slack = np.full_like(accuracy, tolerance)
    eligible = best - accuracy <= slack + 1e-12
  # the fastest eligible; among equally fast, the more accurate
  key = np.where(eligible, seconds, np.inf)
  fastest = key.min(axis=1, keepdims=True)
  return np.where(key == fastest, accuracy, -np.inf).argmax(axis=1)


def rule_text(
  rule: str,
  tolerance: float = 0.005,
  per_doubling: float = PER_DOUBLING,
  split: str = "validation",
  speed: str = DEFAULT_SPEED,
) -> str:
  """The rule in words."""
  if rule == "exchange_rate":
    return (
      f"the configuration with the best mean {split} accuracy minus {100 * per_doubling:.2f} points per doubling "
      f"of {SPEEDS[speed][1]}: a network twice as slow must be {100 * per_doubling:.2f} points more accurate "
      "to be preferred (sweep.report.per_doubling)"
    )
  if rule == "within_std":
    return (
      f"the fastest configuration whose mean {split} accuracy is within one standard deviation over seeds (the "
      "larger of its own and the best's) of the best mean"
    )
  return f"the fastest configuration whose mean {split} accuracy is within {100 * tolerance:.2f} points (sweep.report.tolerance) of the best mean"


def sweet_spot(
  rows: Sequence[ConfigResult], rule: str = DEFAULT_RULE, tolerance: float = 0.005, per_doubling: float = PER_DOUBLING
) -> tuple[ConfigResult, str]:
  """The configuration the rule picks from the mean figures (see the module), and the rule in words."""
  if rule not in RULES:
    raise ConfigError(f"sweep.report.rule={rule!r} is not allowed; use one of {RULES}")
  if not rows:
    raise DataError("no completed trials to choose a sweet spot from")
  rows = [r for r in rows if not r.at_chance]
  if not rows:
    raise DataError("no sweet spot: every configuration's accuracy is at chance (it learned nothing)")
  accuracy = np.array([[r.accuracy_mean for r in rows]])
  cost = np.array([[r.cost_mean for r in rows]])
  std = np.array([r.accuracy_std for r in rows])
  chosen = rows[int(choose(accuracy, cost, std, rule, tolerance, per_doubling)[0])]
  best = max(rows, key=lambda r: r.accuracy_mean)
  words = rule_text(rule, tolerance, per_doubling, rows[0].split, rows[0].speed)
  return chosen, f"{words} (most accurate: {best.name}, {accuracy_text(best)})"


def most_accurate(rows: Sequence[ConfigResult]) -> ConfigResult | None:
  """The configuration with the best mean accuracy on the deciding split."""
  return max(rows, key=lambda r: r.accuracy_mean, default=None)


def check_rule(settings: Mapping[str, Any]) -> None:
  """ConfigError naming a bad ``sweep.report`` field and what is allowed."""
  if settings.get("rule", DEFAULT_RULE) not in RULES:
    raise ConfigError(f"sweep.report.rule={settings.get('rule')!r} is not allowed; use one of {RULES}")
  for field, default, example in (("tolerance", 0.005, "0.005"), ("per_doubling", PER_DOUBLING, "0.005")):
    value = settings.get(field, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
      raise ConfigError(f"sweep.report.{field}={value!r}: give an accuracy difference >= 0, e.g. {example}")
  if settings.get("speed", DEFAULT_SPEED) not in SPEEDS:
    raise ConfigError(f"sweep.report.speed={settings.get('speed')!r} is not allowed; use one of {tuple(SPEEDS)}")
  sure = settings.get("confidence", 0.9)
  if isinstance(sure, bool) or not isinstance(sure, (int, float)) or not 0.5 <= sure < 1:
    raise ConfigError(f"sweep.report.confidence={sure!r}: give a share of draws in [0.5, 1), e.g. 0.9")


def report_settings(config: Mapping[str, Any]) -> dict[str, Any]:
  """A sweep config's ``sweep.report`` settings (how the sweet spot is chosen)."""
  return dict((config.get("sweep") or {}).get("report") or {})


def rule_of(rows: Sequence[ConfigResult], settings: Mapping[str, Any]) -> tuple:
  """``sweet_spot``'s arguments from ``sweep.report`` settings (a recorded sweep without a rule: the rule
  it was reported with then, :data:`RECORDED_DEFAULT_RULE`)."""
  rule = settings.get("rule", RECORDED_DEFAULT_RULE)
  return rows, rule, settings.get("tolerance", 0.005), settings.get("per_doubling", PER_DOUBLING)


def chosen_sweet_spot(rows: Sequence[ConfigResult], config: Mapping[str, Any]) -> tuple[ConfigResult | None, str]:
  """The sweet spot by the config's ``sweep.report`` rule and the rule in words; or None and why there is none."""
  settings = report_settings(config)
  try:
    return sweet_spot(*rule_of(rows, settings))
  except DataError as e:
    return None, str(e)
