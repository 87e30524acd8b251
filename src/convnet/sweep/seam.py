"""The seam between the sweep's driver and its strategies: what a strategy sees and what it answers.

The driver (``convnet.sweep.driver``) shows a strategy a :class:`Board` and asks it for the next
:class:`Step`; the strategies are ``convnet.sweep.strategies`` (the full grid, Pareto pruning) and
``convnet.sweep.racing``. A stopped trial is recorded with a :class:`Verdict`.
"""

from collections.abc import Mapping, Sequence
import dataclasses
import logging
from typing import Protocol

log = logging.getLogger("convnet")


@dataclasses.dataclass(frozen=True)
class Verdict:
  """Why a configuration is stopped: the faster one that dominates it, and by how much."""

  name: str
  by: str
  accuracy_lead: float  # by's mean accuracy minus the pruned one's (negative: inside the margin)
  margin: float
  speedup: float  # the pruned one's s/epoch over by's
  why: str = ""  # said instead of the default text (racing: its chances)

  def text(self) -> str:
    if self.why:
      return f"{self.name}: {self.why}"
    return (
      f"{self.name}: {self.by} is {self.speedup:.2f}x faster and {100 * self.accuracy_lead:+.2f} points as accurate "
      f"(margin {100 * self.margin:.2f} points)"
    )


@dataclasses.dataclass(frozen=True)
class Step:
  """What the driver does next: trials to train to an epoch; trials to stop (recorded ``pruned``)."""

  train: Mapping[str, int] = dataclasses.field(default_factory=dict)  # trial name -> epoch to train to
  stop: Mapping[str, tuple[int, Verdict]] = dataclasses.field(default_factory=dict)  # trial -> (epoch, why)


class Board(Protocol):
  """What a strategy sees of a sweep (``convnet.sweep.driver`` shows its records; a replay, a finished grid's)."""

  num_epochs: int
  configurations: Mapping[str, Sequence[str]]  # configuration -> its trials' names, in seed order
  num_classes: int  # 0: unknown (then no configuration counts as at chance)
  # configuration -> its architecture, where configurations differ in axes that are not costs (``sweep.tuned``):
  # those sharing one are tuned against each other, not traded; empty: each configuration is its own
  architectures: Mapping[str, str]

  def status(self, trial: str) -> str | None:
    """The trial's recorded end ('completed', 'pruned', 'failed', 'skipped'), or None while it may train."""

  def reached(self, trial: str) -> int:
    """Epochs the trial has recorded."""

  def figures(self, trial: str, epoch: int) -> tuple[float, float] | None:
    """(validation accuracy after ``epoch``, median s/epoch through it), or None if not recorded."""


class Strategy(Protocol):
  """What the driver asks a sweep's decision rule."""

  def next(self, board: Board) -> Step | None:
    """What to train or stop next, or None when the sweep is done (see the module)."""

  def describe(self) -> str:
    """The strategy in a few words, for the log."""


def rung_figures(board: Board, trials: Mapping[str, Sequence[str]], epoch: int) -> dict[str, list[tuple[float, float]]]:
  """(accuracy, s/epoch) at ``epoch`` of the given trials that reached it, by configuration: a trial that
  failed at a later epoch counts here as it did when the decision at ``epoch`` was made (a failed epoch
  writes no metrics line), so a decision worked out again is the same."""
  out = {}
  for name, members in trials.items():
    seen = []
    for t in members:
      if board.status(t) == "skipped":
        continue
      if (figures := board.figures(t, epoch)) is not None:  # also one that failed later: it counted then
        seen.append(figures)
      elif board.reached(t) >= epoch:
        log.warning("%s: no record of epoch %d in its metrics (a damaged line); the decision after epoch %d goes on "
                    "without this seed", t, epoch, epoch)  # fmt: skip
    if seen:
      out[name] = seen
  return out


def stops(board: Board, configurations, epoch: int, verdicts: Mapping[str, Verdict]) -> dict[str, tuple[int, Verdict]]:
  """The trials still to train of the stopped configurations, each with its (epoch, verdict)."""
  return {
    t: (epoch, verdicts[name])
    for name, members in configurations.items()
    if name in verdicts
    for t in members
    if board.status(t) is None
  }
