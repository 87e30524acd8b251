"""What a sweep runs next, decided by pure functions of recorded results: a full grid, Pareto pruning, racing.

A *strategy* (:class:`Strategy`) is the driver's seam (``convnet.sweep.driver``). The driver shows it
a :class:`Board` (the sweep's configurations, each with its trials in seed order, and what each trial
has recorded) and asks for the next :class:`Step`: trials to train to an epoch, and trials to stop
(recorded as ``pruned`` at an epoch, with why); None when the sweep is done. A strategy keeps no state
between calls: each call works its decisions out again from the records, in the order it made them,
so a sweep resumed after a kill decides exactly as the interrupted one did, and a replay on a finished
grid (``convnet.sweep.replay``) decides as a live sweep would. :class:`Grid` trains every trial to
``num_epochs``; :class:`ParetoPruning` stops, at each rung, the dominated configurations (below);
``convnet.sweep.racing.Racing`` starts every configuration with a few seeds and adds seeds where
they decide.

Pareto pruning. A configuration is *dominated* at a rung (after the same number of epochs for everyone) when a
faster configuration is at least as accurate as it there, within the noise of the seeds:

    faster.seconds < it.seconds  and  faster.accuracy_mean >= it.accuracy_mean - margin

with ``margin = prune_margin x max(it.std, faster.std)`` (standard deviations over seeds) when both have
two seeds or more, and ``margin = one_seed_margin`` (accuracy points, as a fraction) when either has one
seed only. Such a configuration can neither be the sweet spot nor add to the Pareto front anything the
seeds can tell apart. **Only a configuration that trains on can dominate**: the rule decides fastest
first, and a configuration stopped at this rung stops nothing. (The margin is not transitive: without
this, a chain of configurations, each inside the noise of the next faster one, stops the chain's far
end although it may be well ahead of every configuration left; the recorded ``:wide`` sweep did this
once.) So every stopped configuration has a dominator that goes on; of those, the verdict names the one
with the largest accuracy lead.

**Leaders are kept** (``sweep.prune.keep_leaders``, the default): a configuration within the same margin of the
rung's most accurate one is never stopped, because it may still become the most accurate, and the most
accurate configuration sets the sweet spot's bar (``sweep.report.rule``: the fastest configuration within
noise of the best). Without this, the rule stops a slow configuration that is level with faster ones
early and pulls ahead later, the bar drops, and the sweet spot moves to a faster configuration: on the
recorded default grid (experiments/fashion_mnist_sweet_spot) the rule without it changes the answer in
every schedule tried that prunes after epoch 1, and keeps it at rungs 2 and 3 by 0.12 points only; with
it the answer holds in every schedule tried.

How a sweep uses it (``config.sweep.prune.method='pareto'``): every trial trains to the first
rung (``config.sweep.prune.rungs``, epochs), the rule runs on each configuration's standing there (mean and
std validation accuracy over the seeds that reached it; s/epoch the mean over seeds of each trial's median
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
from convnet.sweep import racing
from convnet.sweep.seam import Board, Step, Strategy, Verdict, rung_figures, stops

METHODS = ("pareto", "race")

DEFAULT_MARGIN = 1.0  # standard deviations over seeds
ONE_SEED_MARGIN = 0.005  # accuracy (0.5 points) when a configuration has one seed: its spread is unknown


@dataclasses.dataclass(frozen=True)
class Standing:
  """A configuration after a rung: its mean and std validation accuracy over seeds, seeds, s/epoch."""

  name: str
  accuracy_mean: float
  accuracy_std: float
  seeds: int
  seconds: float


def margin(a: Standing, b: Standing, prune_margin: float = DEFAULT_MARGIN, one_seed: float = ONE_SEED_MARGIN) -> float:
  """The noise margin between two configurations' mean accuracies (see the module docstring)."""
  if a.seeds < 2 or b.seeds < 2:
    return one_seed
  return prune_margin * max(a.accuracy_std, b.accuracy_std)


def dominated(
  standings: Sequence[Standing],
  prune_margin: float = DEFAULT_MARGIN,
  one_seed: float = ONE_SEED_MARGIN,
  keep_leaders: bool = True,
) -> dict[str, Verdict]:
  """The configurations to stop at this rung, by name, each with its verdict (see the module docstring)."""
  if prune_margin < 0 or one_seed < 0:
    raise ValueError(f"prune margins must be >= 0; got {prune_margin} std and {one_seed} for one seed")
  leader = max(standings, key=lambda s: s.accuracy_mean, default=None)
  out, kept = {}, []
  for it in sorted(standings, key=lambda s: s.seconds):  # fastest first: its possible dominators are decided
    if keep_leaders and leader.accuracy_mean - it.accuracy_mean <= margin(it, leader, prune_margin, one_seed):
      kept.append(it)  # it may still become the most accurate: the sweet spot's bar
      continue
    verdicts = [
      Verdict(it.name, other.name, other.accuracy_mean - it.accuracy_mean, gap, it.seconds / other.seconds)
      for other in kept
      if other.seconds < it.seconds
      and other.accuracy_mean >= it.accuracy_mean - (gap := margin(it, other, prune_margin, one_seed))
    ]
    if verdicts:
      out[it.name] = max(verdicts, key=lambda v: (v.accuracy_lead, v.speedup))
    else:
      kept.append(it)
  return out


def method(prune: Mapping[str, Any]) -> str | None:
  """``sweep.prune.method``: None (also 'none', as a command line gives it) or one of METHODS; else ConfigError."""
  value = prune.get("method")
  if value is None or (isinstance(value, str) and value.lower() == "none"):
    return None
  if value not in METHODS:
    raise ConfigError(f"sweep.prune.method={value!r} is not allowed; use None (the full grid) or one of {METHODS}")
  return value


def check(prune: Mapping[str, Any]) -> None:
  """ConfigError naming a bad ``sweep.prune`` field and what is allowed."""
  method(prune)
  values = prune.get("rungs", (1, 2))
  if (
    not isinstance(values, (tuple, list))
    or not values
    or any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in values)
  ):
    raise ConfigError(f"sweep.prune.rungs={values!r}: give a tuple of epochs >= 1, e.g. '(1,2)'")
  if not isinstance(prune.get("keep_leaders", True), bool):
    raise ConfigError(f"sweep.prune.keep_leaders={prune.get('keep_leaders')!r}: give True or False")
  for field in ("margin", "one_seed_margin"):
    value = prune.get(field, 0.0)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
      raise ConfigError(f"sweep.prune.{field}={value!r}: give a number >= 0")


def standing(name: str, seeds: Sequence[tuple[float, float]]) -> Standing:
  """A configuration's standing from its seeds' (validation accuracy, median s/epoch) at a rung."""
  accuracy = [a for a, _ in seeds]
  return Standing(
    name,
    statistics.fmean(accuracy),
    statistics.stdev(accuracy) if len(accuracy) > 1 else 0.0,
    len(seeds),
    statistics.fmean(s for _, s in seeds),
  )


def standings(figures: Mapping[str, Sequence[tuple[float, float]]]) -> list[Standing]:
  """Each configuration's standing from its seeds' (validation accuracy, median s/epoch) at a rung."""
  return [standing(name, seeds) for name, seeds in figures.items()]


@dataclasses.dataclass(frozen=True)
class Grid:
  """Every trial trains to ``num_epochs``: no rung, nothing stopped."""

  def next(self, board: Board) -> Step | None:
    todo = {t: board.num_epochs for ts in board.configurations.values() for t in ts if board.status(t) is None}
    return Step(train=todo) if todo else None

  def describe(self) -> str:
    return "the full grid"


@dataclasses.dataclass(frozen=True)
class ParetoPruning:
  """Stops, at each rung, the configurations that a faster one that trains on dominates (see the module)."""

  rungs: tuple[int, ...]
  margin: float = DEFAULT_MARGIN
  one_seed_margin: float = ONE_SEED_MARGIN
  keep_leaders: bool = True

  def decide(self, rung: int, standings: Sequence[Standing]) -> dict[str, Verdict]:
    return dominated(standings, self.margin, self.one_seed_margin, self.keep_leaders)

  def next(self, board: Board) -> Step | None:
    for rung in (r for r in self.rungs if r < board.num_epochs):
      behind = {t: rung for ts in board.configurations.values() for t in ts
                if board.status(t) is None and board.reached(t) < rung}  # fmt: skip
      if behind:
        return Step(train=behind)
      verdicts = self.decide(rung, standings(rung_figures(board, board.configurations, rung)))
      if stopped := stops(board, board.configurations, rung, verdicts):
        return Step(stop=stopped)
    return Grid().next(board)

  def describe(self) -> str:
    return f"Pareto pruning at epochs {', '.join(map(str, self.rungs))}"


def from_settings(prune: Mapping[str, Any], num_epochs: int, report: Mapping[str, Any] | None = None) -> Strategy:
  """The strategy that ``sweep.prune`` asks for (ConfigError for a bad field); rungs at or after
  ``num_epochs`` are no rungs. ``report``: ``sweep.report`` (racing aims at its rule and confidence)."""
  check(prune)
  chosen = method(prune)
  if chosen is None:
    return Grid()
  rungs = tuple(sorted({v for v in prune.get("rungs", (1, 2)) if v < num_epochs}))
  if chosen == "race":
    return racing.from_settings(prune, rungs, report or {})
  return ParetoPruning(
    rungs,
    prune.get("margin", DEFAULT_MARGIN),
    prune.get("one_seed_margin", ONE_SEED_MARGIN),
    prune.get("keep_leaders", True),
  )
