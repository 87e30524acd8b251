"""Pareto pruning's rule: which configurations a sweep can stop at a rung (pure functions on results).

A configuration is *dominated* at a rung (after the same number of epochs for everyone) when a
faster configuration is at least as accurate as it there, within the noise of the seeds:

    faster.seconds < it.seconds  and  faster.accuracy_mean >= it.accuracy_mean - margin

with ``margin = prune_margin x max(it.std, faster.std)`` (standard deviations over seeds) when both have
two seeds or more, and ``margin = one_seed_margin`` (accuracy points, as a fraction) when either has one
seed only. Such a configuration can neither be the sweet spot nor add to the Pareto front anything the
seeds can tell apart, so training it further buys nothing for the sweep's question. Of the
configurations that dominate it, the verdict names the one with the largest accuracy lead.

How a sweep uses it (``config.prune='pareto'``, ``convnet.sweep``): every trial trains to the first
rung (``config.prune_rungs``, epochs), the rule runs on each configuration's standing there (mean and
std test accuracy over the seeds that reached it; s/epoch the mean over seeds of each trial's median
epoch, compilation excluded), the dominated configurations' trials are recorded as ``pruned`` and go
no further; the others train on to the next rung, and so on up to ``num_epochs``. Standings are read
from the trials' own ``metrics.jsonl`` at the rung's epoch, so a resumed sweep decides exactly as the
interrupted one did. With one seed the spread is unknown, so the margin is a fixed number of points.
"""

from collections.abc import Mapping, Sequence
import dataclasses
import statistics
from typing import Any

from convnet.errors import ConfigError

METHODS = ("pareto",)

DEFAULT_MARGIN = 1.0  # standard deviations over seeds
ONE_SEED_MARGIN = 0.005  # accuracy (0.5 points) when a configuration has one seed: its spread is unknown


@dataclasses.dataclass(frozen=True)
class Standing:
  """A configuration after a rung: its mean and std test accuracy over seeds, seeds, s/epoch."""

  name: str
  accuracy_mean: float
  accuracy_std: float
  seeds: int
  seconds: float


@dataclasses.dataclass(frozen=True)
class Verdict:
  """Why a configuration is stopped: the faster one that dominates it, and by how much."""

  name: str
  by: str
  accuracy_lead: float  # by's mean accuracy minus the pruned one's (negative: inside the margin)
  margin: float
  speedup: float  # the pruned one's s/epoch over by's

  def text(self) -> str:
    return (
      f"{self.name}: {self.by} is {self.speedup:.2f}x faster and {100 * self.accuracy_lead:+.2f} points as accurate "
      f"(margin {100 * self.margin:.2f} points)"
    )


def margin(a: Standing, b: Standing, prune_margin: float = DEFAULT_MARGIN, one_seed: float = ONE_SEED_MARGIN) -> float:
  """The noise margin between two configurations' mean accuracies (see the module docstring)."""
  if a.seeds < 2 or b.seeds < 2:
    return one_seed
  return prune_margin * max(a.accuracy_std, b.accuracy_std)


def dominated(
  standings: Sequence[Standing], prune_margin: float = DEFAULT_MARGIN, one_seed: float = ONE_SEED_MARGIN
) -> dict[str, Verdict]:
  """The configurations to stop at this rung, by name, each with its verdict."""
  if prune_margin < 0 or one_seed < 0:
    raise ValueError(f"prune margins must be >= 0; got {prune_margin} std and {one_seed} for one seed")
  out = {}
  for it in standings:
    verdicts = [
      Verdict(it.name, other.name, other.accuracy_mean - it.accuracy_mean, gap, it.seconds / other.seconds)
      for other in standings
      if other.seconds < it.seconds
      and other.accuracy_mean >= it.accuracy_mean - (gap := margin(it, other, prune_margin, one_seed))
    ]
    if verdicts:
      out[it.name] = max(verdicts, key=lambda v: (v.accuracy_lead, v.speedup))
  return out


def rungs(config: Mapping[str, Any]) -> list[int]:
  """The epochs at which ``config`` prunes before its last (empty without ``prune``); ConfigError if bad."""
  method = config.get("prune")
  if method is None:
    return []
  if method not in METHODS:
    raise ConfigError(f"prune={method!r} is not allowed; use None (the full grid) or one of {METHODS}")
  values = config.get("prune_rungs")
  if (
    not isinstance(values, (tuple, list))
    or not values
    or any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in values)
  ):
    raise ConfigError(f"prune_rungs={values!r}: give a tuple of epochs >= 1, e.g. '(1,2)'")
  for field in ("prune_margin", "prune_one_seed_margin"):
    value = config.get(field, 0.0)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
      raise ConfigError(f"{field}={value!r}: give a number >= 0")
  return sorted({v for v in values if v < config["num_epochs"]})


def standing(name: str, seeds: Sequence[tuple[float, float]]) -> Standing:
  """A configuration's standing from its seeds' (test accuracy, median s/epoch) at a rung."""
  accuracy = [a for a, _ in seeds]
  return Standing(
    name,
    statistics.fmean(accuracy),
    statistics.stdev(accuracy) if len(accuracy) > 1 else 0.0,
    len(seeds),
    statistics.fmean(s for _, s in seeds),
  )
