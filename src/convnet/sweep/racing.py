"""Racing: seeds and epochs go where they decide the answer (``sweep.prune.method='race'``).

Every configuration starts with its first ``initial_seeds`` seeds (``sweep.axes.seeds`` is the pool, in
the order seeds are added). Then:

1. **Rungs** (``sweep.prune.rungs``, epochs): the configurations' seeds train to the rung, and the draws
   over the seeds at the rung (``convnet.results.confidence``: pooled spread, Student's t) give each
   configuration its share of draws as the sweet spot (by ``sweep.report``'s rule). A configuration
   picked in fewer than ``stop_below`` of them stops when the front can do without it: taken least
   needed first, while the Pareto front in (log2 s/epoch, accuracy) without it and the ones already
   taken keeps at least ``1 - front_loss`` of its hypervolume (``convnet.results.volume``) in at least
   ``1 - stop_below`` of the draws. A network that is on the front only by a sliver no seed count can
   resolve (the big networks of a plateau, a twice-slower twin) is stopped; one that the trade-off
   needs is kept (``front_loss=0``: kept while it adds any area in more than ``stop_below`` of the
   draws). Its trials are recorded ``pruned`` with those shares. A configuration left that is out of
   contention (picked in fewer than ``stop_below`` of the draws) but on the front in more than
   ``1 - stop_below`` of them (speeds within ``speed_margin``, relative, count as equal: timing noise
   cannot put a network on the front) trains only its first ``front_seeds`` seeds on (None, the
   default: all of them): its place is sure, and the pooled spread says how well fewer seeds place it.
2. **The last epoch**: the configurations left train their seeds to ``num_epochs``.
3. **Seeds**: while the answer (the rule's pick on the means) is picked in fewer than
   ``sweep.report.confidence`` of the draws, each configuration still picked in at least
   ``stop_below`` of them trains its next seed from the pool; it ends when the answer reaches the
   confidence, when no contender has a seed left, when the two leading contenders are so level that
   the whole pool would likely not settle them (``confidence.seeds_to_settle``: undecided, practically
   level), or when the next seeds would take the trial-epochs past ``budget`` (None: no budget but the
   pool).

**Axes that are not costs** (``sweep.tuned``, e.g. the learning rate): the configurations of one
architecture (the board's ``architectures``) are represented at each decision by their best mean
accuracy, as the report tunes them, and the race runs over those; another setting stops at a rung when
it beats its architecture's best in fewer than ``stop_below`` of the draws (tuned away), and stopping
an architecture stops all its settings.

Every decision is worked out again from the records on every call (:meth:`Racing.next`), in the order it
was made, from figures recorded at the epoch it was made at: a sweep killed at any moment and run again
decides the same, on any executor. Decisions read validation accuracy only.
"""

from collections.abc import Mapping, Sequence
import dataclasses
from typing import Any

from convnet.errors import ConfigError
from convnet.results import analysis, confidence
from convnet.sweep import standings
from convnet.sweep.seam import Board, Step, Verdict, rung_figures, stops

INITIAL_SEEDS = 2
STOP_BELOW = 0.05
SPEED_MARGIN = 0.05
FRONT_LOSS = 0.01
FRONT_SEEDS = None  # a sure front member out of contention keeps all its seeds


@dataclasses.dataclass(frozen=True)
class Racing:
  """See the module."""

  rungs: tuple[int, ...]
  initial_seeds: int = INITIAL_SEEDS
  stop_below: float = STOP_BELOW
  speed_margin: float = SPEED_MARGIN
  budget: int | None = None  # trial-epochs
  front_loss: float = FRONT_LOSS
  front_seeds: int | None = FRONT_SEEDS
  rule: str = analysis.DEFAULT_RULE
  tolerance: float = 0.005
  per_doubling: float = analysis.PER_DOUBLING
  confidence: float = confidence.CONFIDENCE

  def describe(self) -> str:
    budget = f", budget {self.budget} trial-epochs" if self.budget else ""
    return (
      f"racing: {self.initial_seeds} seeds to start, rungs at epochs {', '.join(map(str, self.rungs)) or 'none'}, "
      f"seeds added until {100 * self.confidence:.0f}% sure{budget}; the front kept to {100 * (1 - self.front_loss):g}% "
      f"of its hypervolume"
      + (f", {self.front_seeds} seed(s) for a sure front member out of contention" if self.front_seeds else "")
    )

  def chances(
    self, figures: Mapping[str, Sequence[tuple[float, float]]], num_classes: int = 0, architectures=None
  ) -> standings.Chances:
    """The shares of draws (see the module) from each configuration's (accuracy, s/epoch) per seed; a
    configuration at chance accuracy (as the report: ``ConfigResult.at_chance``) is never the answer,
    is on no front, and its seeds do not count in the spread. ``architectures`` (the board's): the
    configurations that share one are represented by their best mean accuracy, as the report tunes
    them (``convnet.results.tuning``); the others get the share of draws in which they beat it. Kept
    for the same figures: every call to :meth:`next` works the earlier decisions out again."""
    named = tuple(sorted((architectures or {}).items()))
    return standings.weigh(self, tuple((name, tuple(f)) for name, f in figures.items()), num_classes, named)

  def _hopeless(self, chances: standings.Chances, figures, pool: int, num_classes: int) -> bool:
    """Whether the two contenders are so level that even the whole seed pool would likely not settle them
    (``confidence.seeds_to_settle``): then more seeds are spent for nothing, and the answer is undecided."""
    rows = [r for r in (standings.row(n, f, num_classes) for n, f in figures.items()) if not r.at_chance]
    shares = dict(sorted(((n, v) for n, v in chances.spot.items() if v > 0), key=lambda item: -item[1]))
    found = confidence.seeds_to_settle(rows, shares, None, self.rule, self.per_doubling, self.confidence)
    return found is not None and found[3] > pool

  def _verdicts(
    self, chances: standings.Chances, epoch: int, out: Sequence[str], seeds: bool = False
  ) -> dict[str, Verdict]:
    leader = chances.pick
    lead_accuracy, lead_seconds = chances.means[leader]

    def why(name: str) -> str:
      spot = (
        f"at epoch {epoch} it is the sweet spot in {100 * chances.spot[name]:.1f}% of draws over the seeds "
        f"(below {100 * self.stop_below:g}%; leading: {leader})"
      )
      if name in chances.beats:
        best, share = chances.beats[name]
        return (
          f"at epoch {epoch} it beats {best}, the best setting of its architecture (sweep.tuned), in "
          f"{100 * share:.1f}% of draws over the seeds (below {100 * self.stop_below:g}%): tuned away"
        )
      if seeds:
        return (
          f"{spot}, and on the front in {100 * chances.front[name]:.1f}%: its first {self.front_seeds} seed(s) place it"
        )
      return (
        f"{spot}, and without it the front keeps {100 * (1 - self.front_loss):g}% of its hypervolume in "
        f"{100 * chances.kept.get(name, 1.0):.1f}% of them (on the front in {100 * chances.front[name]:.1f}%)"
      )

    return {
      name: Verdict(name, leader, lead_accuracy - chances.means[name][0], 0.0, chances.means[name][1] / lead_seconds,
                    why=why(name))
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
      chances = self.chances(figures, getattr(board, "num_classes", 0), getattr(board, "architectures", None))
      away = [n for n, (_, share) in chances.beats.items() if share < self.stop_below and n not in chances.spare]
      out = [n for n in figures if n in chances.spare or n in away]
      alive = [n for n in alive if n in figures and n not in out]
      if stopped := stops(board, in_play, rung, self._verdicts(chances, rung, out)):
        return Step(stop=stopped)
      extra = {
        n: in_play[n][self.front_seeds :]
        for n in alive
        if self.front_seeds
        and chances.spot[n] < self.stop_below
        and chances.front[n] > 1 - self.stop_below
        and n != chances.pick
      }
      if stopped := stops(board, extra, rung, self._verdicts(chances, rung, list(extra), seeds=True)):
        return Step(stop=stopped)
    last = board.num_epochs
    while True:  # 2. the last epoch, then 3. seeds where they decide
      todo = {t: last for name in alive for t in in_play[name] if board.status(t) is None}
      if todo:
        return Step(train=todo)
      figures = rung_figures(board, {name: in_play[name] for name in alive}, last)
      chances = self.chances(figures, getattr(board, "num_classes", 0), getattr(board, "architectures", None))
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


def check(prune: Mapping[str, Any]) -> None:
  """ConfigError naming a bad racing field of ``sweep.prune`` and what is allowed."""
  seeds = prune.get("initial_seeds", INITIAL_SEEDS)
  if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 2:
    raise ConfigError(f"sweep.prune.initial_seeds={seeds!r}: give an int >= 2 (two seeds give the first spread)")
  for field, default in (("stop_below", STOP_BELOW), ("speed_margin", SPEED_MARGIN)):
    value = prune.get(field, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
      raise ConfigError(f"sweep.prune.{field}={value!r}: give a number in [0, 1), e.g. {default}")
  loss = prune.get("front_loss", FRONT_LOSS)
  if isinstance(loss, bool) or not isinstance(loss, (int, float)) or not 0 <= loss < 1:
    raise ConfigError(
      f"sweep.prune.front_loss={loss!r}: give a share of the front's hypervolume in [0, 1), e.g. {FRONT_LOSS}"
    )
  kept = prune.get("front_seeds", FRONT_SEEDS)
  if kept is not None and (isinstance(kept, bool) or not isinstance(kept, int) or kept < 1):
    raise ConfigError(
      f"sweep.prune.front_seeds={kept!r}: give an int >= 1 (seeds of a sure front member trained on), or None (all)"
    )
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
    initial_seeds=prune.get("initial_seeds", INITIAL_SEEDS),
    stop_below=prune.get("stop_below", STOP_BELOW),
    speed_margin=prune.get("speed_margin", SPEED_MARGIN),
    budget=prune.get("budget"),
    front_loss=prune.get("front_loss", FRONT_LOSS),
    front_seeds=prune.get("front_seeds", FRONT_SEEDS),
    rule=rule,
    tolerance=tolerance,
    per_doubling=per_doubling,
    confidence=report.get("confidence", confidence.CONFIDENCE),
  )
