"""A strategy run again on a finished grid's records: what it would have trained, stopped and answered.

``python -m convnet.pruning --workdir=runs/sweep --rungs=1,2 --margin=1.0`` prints Pareto pruning's
replay (``convnet.pruning``); ``python -m convnet.race --workdir=... --orders=50`` replays racing over
random seed orders (``convnet.race``).

:class:`Replayed` is a ``convnet.sweep.seam.Board`` over the recorded epochs of a finished grid
(each trial's ``trials/<name>/metrics.jsonl``): training a trial to an epoch reveals its recorded
epochs up to it, so any strategy decides on it exactly as it would have live, if the trials had
trained to the same numbers (they do: a trial's epochs do not depend on what else ran). The seed order
of each configuration can be permuted (:func:`grid`), to ask how a strategy fares with other seeds.
"""

from collections.abc import Mapping, Sequence
import dataclasses
import statistics
from typing import Any

from convnet.errors import DataError
from convnet.results import analysis
from convnet.sweep import settings, strategies, trials
from convnet.sweep import store as sweep_store
from convnet.sweep.seam import Step, Strategy, Verdict
from convnet.sweep.strategies import DEFAULT_MARGIN, ONE_SEED_MARGIN


@dataclasses.dataclass
class Replayed:
  """A finished grid as a strategy sees it, trained only as far as the strategy asks (see the module)."""

  histories: Mapping[str, Sequence[Mapping[str, Any]]]  # trial -> its recorded metrics lines, epoch order
  configurations: dict[str, list[str]]  # configuration -> trials, in the order seeds are taken
  num_epochs: int
  num_classes: int = 0
  architectures: dict[str, str] = dataclasses.field(default_factory=dict)  # see convnet.sweep.seam.Board
  _reached: dict[str, int] = dataclasses.field(default_factory=dict)
  _status: dict[str, str] = dataclasses.field(default_factory=dict)
  stopped: dict[str, tuple[int, Verdict]] = dataclasses.field(default_factory=dict)

  def status(self, trial: str) -> str | None:
    return self._status.get(trial)

  def reached(self, trial: str) -> int:
    return self._reached.get(trial, 0)

  def figures(self, trial: str, epoch: int) -> tuple[float, float] | None:
    if epoch > self.reached(trial):
      return None
    history = [m for m in self.histories[trial] if m["epoch"] <= epoch]
    if not history or history[-1]["epoch"] != epoch:
      return None
    return sweep_store.deciding(history[-1]), statistics.median(m["epoch_seconds"] for m in history)

  def apply(self, step: Step) -> None:
    """What the driver would do with ``step``: stopped trials recorded pruned, the others trained."""
    for trial, (epoch, verdict) in step.stop.items():
      self._status[trial] = "pruned"
      self.stopped[trial] = (epoch, verdict)
    for trial, epoch in step.train.items():
      recorded = max((m["epoch"] for m in self.histories[trial]), default=0)
      self._reached[trial] = min(epoch, recorded)
      if epoch >= self.num_epochs or recorded < epoch:  # (a trial that stopped early, stop_at, ended there)
        self._status[trial] = "completed"

  def run(self, strategy: Strategy, max_steps: int = 10_000) -> "Replayed":
    """Plays ``strategy`` to its end on this board; returns it."""
    for _ in range(max_steps):
      step = strategy.next(self)
      if step is None:
        return self
      self.apply(step)
    raise RuntimeError(f"{strategy.describe()} did not end within {max_steps} steps")

  def trial_epochs(self) -> int:
    return sum(self._reached.values())

  def train_seconds(self) -> float:
    return sum(m["epoch_seconds"] for t, e in self._reached.items() for m in self.histories[t] if m["epoch"] <= e)

  def completed_records(self, records: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The result lines of the trials it completed (``records``: the grid's, by trial name)."""
    return [dict(records[t]) for t, status in self._status.items() if status == "completed"]


@dataclasses.dataclass(frozen=True)
class Grid:
  """A finished grid's records, ready to replay strategies on."""

  config: dict[str, Any]
  records: dict[str, dict[str, Any]]  # completed trials' result lines, by name
  histories: dict[str, list[dict[str, Any]]]
  configurations: dict[str, list[str]]  # configuration -> trials, by seed
  num_epochs: int
  left_out: tuple[str, ...]  # configurations of the sweep that did not finish (pruned, failed)

  def board(self, orders: Mapping[str, Sequence[int]] | None = None) -> Replayed:
    """A fresh board; ``orders``: per configuration, the positions of its seeds in the order to take them."""
    configurations = {
      name: [trials[i] for i in orders[name]] if orders else list(trials)
      for name, trials in self.configurations.items()
    }
    classes = max((int(r.get("num_classes") or 0) for r in self.records.values()), default=0)
    tuned = (self.config.get(settings.GROUP) or {}).get("tuned") or ()
    architectures = {
      r["configuration"]: trials.architecture_name({k: v for k, v in (r.get("overrides") or {}).items() if k != "seed"}, tuned)
      for r in self.records.values()
    } if tuned else {}  # fmt: skip
    return Replayed(self.histories, configurations, self.num_epochs, classes, architectures)


def grid(workdir) -> Grid:
  """The finished grid in ``workdir``; DataError if it has no completed trial."""
  store = sweep_store.open_existing(workdir)
  config = store.config() or {}
  results = store.results()
  completed = [r for r in results if r.get("status") == "completed"]
  if not completed:
    raise DataError(f"{store.results_path}: no completed trial to replay a strategy on; finish the sweep first")
  configurations: dict[str, list[str]] = {}
  for r in sorted(completed, key=lambda r: r.get("seed", 0)):
    configurations.setdefault(r["configuration"], []).append(r["name"])
  configurations = {name: configurations[name] for name in dict.fromkeys(r["configuration"] for r in completed)}
  left_out = tuple(sorted({r["configuration"] for r in results} - set(configurations)))
  num_epochs = config.get("num_epochs") or max(int(r["epoch"]) for r in completed)
  histories = {r["name"]: store.epochs(r["name"]) for r in completed}
  return Grid(config, {r["name"]: r for r in completed}, histories, configurations, num_epochs, left_out)


@dataclasses.dataclass(frozen=True)
class Replay:
  """What pruning would have done to a finished full-grid sweep (its trials trained every epoch)."""

  stopped: dict[str, tuple[int, Verdict]]  # trial name -> (rung, verdict)
  full_spot: str | None
  pruned_spot: str | None
  epochs: tuple[int, int]  # (trial-epochs with pruning, without)
  train_seconds: tuple[float, float]  # (training seconds, summed over those epochs, with and without)
  left_out: tuple[str, ...] = ()  # configurations of the sweep that did not finish (pruned, failed)

  def text(self) -> str:
    lines = list(dict.fromkeys(f"epoch {rung}: {verdict.text()}" for rung, verdict in self.stopped.values()))
    used, full = self.epochs
    seconds, all_seconds = self.train_seconds
    same = "the same" if self.full_spot == self.pruned_spot else "a DIFFERENT"
    lines += [
      f"sweet spot: full grid {self.full_spot}; pruned {self.pruned_spot} ({same} answer)",
      f"trial-epochs: {used} of {full} ({100 * used / full:.0f}%); training seconds: {seconds:.0f} of "
      f"{all_seconds:.0f} ({100 * seconds / all_seconds:.0f}%, compilation and evaluation excluded)",
    ]
    if self.left_out:
      lines.append(
        f"note: not a full grid: {len(self.left_out)} configuration(s) did not finish there (pruned or failed) and are "
        "left out; the replay treats the finished ones as the whole grid"
      )
    return "\n".join(lines)


def spot(records: Sequence[Mapping[str, Any]], config: Mapping[str, Any]) -> str | None:
  """The sweet spot's name by the config's rule (None if there is none)."""
  chosen = analysis.chosen_sweet_spot(analysis.aggregate(records), config)[0]
  return chosen.name if chosen else None


def replay(
  workdir,
  rungs: Sequence[int],
  prune_margin: float = DEFAULT_MARGIN,
  one_seed: float = ONE_SEED_MARGIN,
  keep_leaders: bool = True,
) -> Replay:
  """Pareto pruning with these rungs run on a full-grid sweep's recorded epochs: which configurations
  stop where, and whether the sweet spot moves. DataError if the sweep has no completed trial."""
  recorded = grid(workdir)
  rule = strategies.ParetoPruning(tuple(sorted(set(rungs))), prune_margin, one_seed, keep_leaders)
  board = recorded.board().run(rule)
  full = recorded.board().run(strategies.Grid())
  return Replay(
    board.stopped,
    spot(full.completed_records(recorded.records), recorded.config),
    spot(board.completed_records(recorded.records), recorded.config),
    (board.trial_epochs(), full.trial_epochs()),
    (board.train_seconds(), full.train_seconds()),
    recorded.left_out,
  )
