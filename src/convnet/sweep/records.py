"""A sweep's records as its strategy sees them: the ``convnet.sweep.seam.Board`` over a sweep directory."""

from collections.abc import Mapping, Sequence
import statistics
from typing import Any

from convnet.sweep import trials
from convnet.sweep.store import SweepStore, deciding


class Board:
  """A sweep's records as a strategy sees them (``convnet.sweep.seam.Board``); epochs read from the
  trials' metrics are kept until :meth:`forget` (after each step)."""

  def __init__(
    self,
    sweep_store: SweepStore,
    expanded: Sequence[trials.Trial],
    done: Mapping[str, Mapping[str, Any]],
    recorded: set[str],
    to_train: set[str],
    num_epochs: int,
    num_classes: int = 0,
    tuned: Sequence[str] = (),
  ):
    """``done``: each trial's latest result line (the driver adds to it); ``recorded``: the trials that got a
    line in this run; ``to_train``: the trials this run may train (None until they get a line); ``tuned``:
    the sweep's axes that are not costs (``sweep.tuned``), which set :attr:`architectures`."""
    self.store, self.done, self.recorded, self.to_train = sweep_store, done, recorded, to_train
    self.num_epochs, self.num_classes = num_epochs, num_classes
    self.configurations: dict[str, list[str]] = {}
    for trial in expanded:
      if trial.name in to_train or trial.name in done:
        self.configurations.setdefault(trial.configuration, []).append(trial.name)
    self.architectures = (
      {t.configuration: trials.architecture_name(t.overrides, tuned) for t in expanded} if tuned else {}
    )
    self._epochs: dict[str, list[dict[str, Any]]] = {}

  def forget(self) -> None:
    self._epochs.clear()

  def _history(self, trial: str) -> list[dict[str, Any]]:
    if trial not in self._epochs:
      self._epochs[trial] = self.store.epochs(trial)
    return self._epochs[trial]

  def status(self, trial: str) -> str | None:
    if trial in self.to_train and trial not in self.recorded:
      return None
    return self.done.get(trial, {}).get("status")

  def reached(self, trial: str) -> int:
    return max((m["epoch"] for m in self._history(trial)), default=0)

  def figures(self, trial: str, epoch: int) -> tuple[float, float] | None:
    history = [m for m in self._history(trial) if m["epoch"] <= epoch]
    if not history or history[-1]["epoch"] != epoch:
      return None
    return deciding(history[-1]), statistics.median(m["epoch_seconds"] for m in history)
