"""Racing: seeds and epochs go where they decide the answer (``sweep.prune.method='race'``).

Every configuration starts with its first ``initial_seeds`` seeds (``sweep.axes.seeds`` is the pool, in
the order seeds are added). Then:

1. **Rungs** (``sweep.prune.rungs``, epochs): the configurations' seeds train to the rung; a
   configuration stops there when, at the rung, the draws over the seeds (``convnet.results.confidence``:
   pooled spread, Student's t) give it a share below ``stop_below`` both of being the sweet spot (by
   ``sweep.report``'s rule) and of being on the Pareto front, where one network counts as faster than
   another only by more than ``speed_margin`` (relative), so that timing noise cannot put a network on
   the front (on an accelerator, epoch times of small networks are nearly equal). Its trials are
   recorded ``pruned`` with those shares.
2. **The last epoch**: the configurations left train their seeds to ``num_epochs``.
3. **Seeds**: while the answer (the rule's pick on the means) is picked in fewer than
   ``sweep.report.confidence`` of the draws, each configuration still picked in at least
   ``stop_below`` of them trains its next seed from the pool; it ends when the answer reaches the
   confidence, when no contender has a seed left, when the two leading contenders are so level that
   the whole pool would likely not settle them (``confidence.seeds_to_settle``: undecided, practically
   level), or when the next seeds would take the trial-epochs past ``budget`` (None: no budget but the
   pool).

Every decision is worked out again from the records on every call (:meth:`Racing.next`), in the order it
was made, from figures recorded at the epoch it was made at: a sweep killed at any moment and run again
decides the same, on any executor. Decisions read validation accuracy only.
"""

from collections.abc import Mapping, Sequence
import dataclasses
import functools
import statistics
from typing import Any

import numpy as np

from convnet.errors import ConfigError
from convnet.results import analysis, confidence
from convnet.sweep.seam import Board, Step, Verdict, rung_figures, stops

INITIAL_SEEDS = 2
STOP_BELOW = 0.05
SPEED_MARGIN = 0.05


def row(name: str, figures: Sequence[tuple[float, float]], num_classes: int = 0) -> analysis.ConfigResult:
  """A configuration's figures (accuracy, s/epoch per seed) as the analysis' row."""
  accuracy, seconds = [a for a, _ in figures], [s for _, s in figures]
  return analysis.ConfigResult(
    name=name, trials=(), seeds=tuple(range(len(figures))), accuracy_mean=statistics.fmean(accuracy),
    accuracy_std=statistics.stdev(accuracy) if len(accuracy) > 1 else 0.0, seconds_mean=statistics.fmean(seconds),
    seconds_std=statistics.stdev(seconds) if len(seconds) > 1 else 0.0, examples_per_second=0.0, num_params=0,
    flops_per_example=0, flatten_size=0, num_classes=num_classes, accuracies=tuple(accuracy), seconds=tuple(seconds),
  )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Chances:
  """Each configuration's share of draws as the sweet spot and on the front; the rule's pick on the means."""

  spot: dict[str, float]
  front: dict[str, float]
  pick: str | None
  means: dict[str, tuple[float, float]]  # name -> (mean accuracy, mean s/epoch)

  @property
  def share(self) -> float:
    return self.spot.get(self.pick, 0.0) if self.pick else 0.0


@dataclasses.dataclass(frozen=True)
class Racing:
  """See the module."""

  rungs: tuple[int, ...]
  initial_seeds: int = INITIAL_SEEDS
  stop_below: float = STOP_BELOW
  speed_margin: float = SPEED_MARGIN
  budget: int | None = None  # trial-epochs
  rule: str = analysis.DEFAULT_RULE
  tolerance: float = 0.005
  per_doubling: float = analysis.PER_DOUBLING
  confidence: float = confidence.CONFIDENCE

  def describe(self) -> str:
    budget = f", budget {self.budget} trial-epochs" if self.budget else ""
    return (
      f"racing: {self.initial_seeds} seeds to start, rungs at epochs {', '.join(map(str, self.rungs)) or 'none'}, "
      f"seeds added until {100 * self.confidence:.0f}% sure{budget}"
    )

  def chances(self, figures: Mapping[str, Sequence[tuple[float, float]]], num_classes: int = 0) -> Chances:
    """The shares of draws (see the module) from each configuration's (accuracy, s/epoch) per seed; a
    configuration at chance accuracy (as the report: ``ConfigResult.at_chance``) is never the answer,
    is on no front, and its seeds do not count in the spread. Kept for the same figures: every call to
    :meth:`next` works the earlier decisions out again."""
    return _chances(self, tuple((name, tuple(f)) for name, f in figures.items()), num_classes)

  def _chances(self, figures: Mapping[str, Sequence[tuple[float, float]]], num_classes: int) -> Chances:
    every = [row(name, f, num_classes) for name, f in figures.items()]
    rows = [r for r in every if not r.at_chance]
    means = {r.name: (r.accuracy_mean, r.seconds_mean) for r in every}
    if not rows:
      return Chances({r.name: 0.0 for r in every}, {r.name: 0.0 for r in every}, None, means)
    pick = analysis.sweet_spot(rows, self.rule, self.tolerance, self.per_doubling)[0].name
    drawn = confidence.draws(rows)
    chance = {r.name: 0.0 for r in every if r.at_chance}
    if drawn is None:  # no spread known yet: nothing can be ruled out
      return Chances({r.name: 1.0 for r in rows} | chance, {r.name: 1.0 for r in rows} | chance, pick, means)
    accuracy, seconds = drawn
    std = np.array([r.accuracy_std for r in rows])
    picks = np.bincount(
      analysis.choose(accuracy, seconds, std, self.rule, self.tolerance, self.per_doubling), minlength=len(rows)
    )
    front = confidence.on_front(accuracy, seconds, self.speed_margin).mean(axis=0)
    names = [r.name for r in rows]
    return Chances(
      dict(zip(names, (picks / len(accuracy)).tolist(), strict=True)) | chance,
      dict(zip(names, front.tolist(), strict=True)) | chance,
      pick,
      means,
    )

  def _hopeless(self, chances: Chances, figures, pool: int, num_classes: int) -> bool:
    """Whether the two contenders are so level that even the whole seed pool would likely not settle them
    (``confidence.seeds_to_settle``): then more seeds are spent for nothing, and the answer is undecided."""
    rows = [r for r in (row(n, f, num_classes) for n, f in figures.items()) if not r.at_chance]
    shares = dict(sorted(((n, v) for n, v in chances.spot.items() if v > 0), key=lambda item: -item[1]))
    found = confidence.seeds_to_settle(rows, shares, None, self.rule, self.per_doubling, self.confidence)
    return found is not None and found[3] > pool

  def _verdicts(self, chances: Chances, epoch: int, out: Sequence[str]) -> dict[str, Verdict]:
    leader = chances.pick
    lead_accuracy, lead_seconds = chances.means[leader]
    return {
      name: Verdict(
        name, leader, lead_accuracy - chances.means[name][0], 0.0, chances.means[name][1] / lead_seconds,
        why=(f"at epoch {epoch} it is the sweet spot in {100 * chances.spot[name]:.1f}% of draws over the seeds and on "
             f"the front in {100 * chances.front[name]:.1f}% (both below {100 * self.stop_below:g}%); leading: {leader}"),
      )
      for name in out
    }  # fmt: skip

  def next(self, board: Board) -> Step | None:
    configurations = dict(board.configurations)
    in_play = {name: list(trials[: self.initial_seeds]) for name, trials in configurations.items()}
    alive = list(configurations)
    for rung in (r for r in self.rungs if r < board.num_epochs):  # 1. rungs
      behind = {t: rung for name in alive for t in in_play[name] if board.status(t) is None and board.reached(t) < rung}
      if behind:
        return Step(train=behind)
      figures = rung_figures(board, {name: in_play[name] for name in alive}, rung)
      chances = self.chances(figures, getattr(board, "num_classes", 0))
      out = [n for n in figures if n != chances.pick and max(chances.spot[n], chances.front[n]) < self.stop_below]
      alive = [n for n in alive if n in figures and n not in out]
      if stopped := stops(board, in_play, rung, self._verdicts(chances, rung, out)):
        return Step(stop=stopped)
    last = board.num_epochs
    while True:  # 2. the last epoch, then 3. seeds where they decide
      todo = {t: last for name in alive for t in in_play[name] if board.status(t) is None}
      if todo:
        return Step(train=todo)
      figures = rung_figures(board, {name: in_play[name] for name in alive}, last)
      chances = self.chances(figures, getattr(board, "num_classes", 0))
      if chances.pick is None or chances.share >= self.confidence:
        return None
      contenders = [n for n in figures if chances.spot[n] >= self.stop_below]
      if self._hopeless(chances, figures, len(max(configurations.values(), key=len)), getattr(board, "num_classes", 0)):
        return None
      added = {n: configurations[n][len(in_play[n])] for n in contenders if len(in_play[n]) < len(configurations[n])}
      spent = sum(min(board.reached(t), last) for trials in in_play.values() for t in trials)  # as when decided
      if not added or (self.budget is not None and spent + last * len(added) > self.budget):
        return None
      for name, trial in added.items():
        in_play[name].append(trial)
      alive = [n for n in alive if n in figures]


@functools.lru_cache(maxsize=4096)
def _chances(race: Racing, figures: tuple, num_classes: int) -> Chances:
  return race._chances(dict(figures), num_classes)


def check(prune: Mapping[str, Any]) -> None:
  """ConfigError naming a bad racing field of ``sweep.prune`` and what is allowed."""
  seeds = prune.get("initial_seeds", INITIAL_SEEDS)
  if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 2:
    raise ConfigError(f"sweep.prune.initial_seeds={seeds!r}: give an int >= 2 (two seeds give the first spread)")
  for field, default in (("stop_below", STOP_BELOW), ("speed_margin", SPEED_MARGIN)):
    value = prune.get(field, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
      raise ConfigError(f"sweep.prune.{field}={value!r}: give a number in [0, 1), e.g. {default}")
  budget = prune.get("budget")
  if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 1):
    raise ConfigError(f"sweep.prune.budget={budget!r}: give a number of trial-epochs >= 1, or None (the seed pool)")


def from_settings(prune: Mapping[str, Any], rungs: tuple[int, ...], report: Mapping[str, Any]) -> Racing:
  """The racing strategy of ``sweep.prune`` (its rungs already cut to those before the last epoch),
  aiming at ``sweep.report``'s rule and confidence."""
  check(prune)
  analysis.check_rule(report)
  _, rule, tolerance, per_doubling = analysis.rule_of([], report)  # the rule the report will use
  return Racing(
    rungs,
    prune.get("initial_seeds", INITIAL_SEEDS),
    prune.get("stop_below", STOP_BELOW),
    prune.get("speed_margin", SPEED_MARGIN),
    prune.get("budget"),
    rule,
    tolerance,
    per_doubling,
    report.get("confidence", confidence.CONFIDENCE),
  )
