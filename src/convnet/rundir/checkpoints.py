"""Orbax checkpoints of a run's train state, one per epoch, in ``<workdir>/checkpoints/<epoch>``.

Orbax writes each checkpoint to a temporary folder and renames it when complete, so a killed run
leaves the last complete epoch to resume from. A run saves through a :class:`Saver`: on a GPU or TPU
asynchronously (the state is copied to the host, then written by orbax's threads while the next epoch
computes: a synchronous save of the seed network took up to a third of an H200 epoch), on the CPU
synchronously (its epochs are timed as measured, with no writer thread beside them). Either way a
save's error (a full disk) is one StorageError naming the epoch, at the latest when the run ends. A checkpoint that is there but does not restore
(a file truncated or garbled after the fact) is passed over, with a warning naming it, for the
newest one that does (the last two are kept); the damaged one is moved to ``damaged_checkpoints/``.
"""

from collections.abc import Sequence
import contextlib
import logging
import os
from pathlib import Path
from typing import Any

from convnet.errors import DataError, StorageError, storage_problem
from convnet.rundir import files

CHECKPOINT_DIR = "checkpoints"
DAMAGED_DIR = "damaged_checkpoints"
log = logging.getLogger("convnet")


def _manager(workdir: str | os.PathLike, create: bool, asynchronous: bool = False):
  import orbax.checkpoint as ocp  # imported on use: orbax is slow to import

  options = ocp.CheckpointManagerOptions(max_to_keep=2, create=create, enable_async_checkpointing=asynchronous)
  return ocp.CheckpointManager(Path(workdir).absolute() / CHECKPOINT_DIR, options=options)


def epochs(workdir: str | os.PathLike) -> list[int]:
  """The checkpointed epochs in ``workdir``, oldest first."""
  if not (Path(workdir) / CHECKPOINT_DIR).is_dir():
    return []
  with _manager(workdir, create=False) as manager:
    return sorted(manager.all_steps())


def latest_epoch(workdir: str | os.PathLike) -> int | None:
  """The last checkpointed epoch in ``workdir``, or None if there is none."""
  found = epochs(workdir)
  return found[-1] if found else None


@contextlib.contextmanager
def _storage_errors(workdir: str | os.PathLike, epoch: int):
  """A full disk or an unwritable folder while saving ``epoch``'s checkpoint as one StorageError."""
  try:
    yield
  except Exception as e:
    problem = storage_problem(e)
    if problem is None:
      raise
    raise StorageError(
      f"{Path(workdir) / CHECKPOINT_DIR / str(epoch)}: cannot save the checkpoint ({problem}); "
      f"free some space and re-run the same command to resume from epoch {epoch - 1}"
    ) from None


def save(workdir: str | os.PathLike, epoch: int, state: Any) -> None:
  """Saves ``state`` as ``epoch``'s checkpoint and returns when it is written."""
  import orbax.checkpoint as ocp

  with _storage_errors(workdir, epoch), _quiet_orbax(), _manager(workdir, create=True) as manager:
    manager.save(epoch, args=ocp.args.StandardSave(state), force=True)
    manager.wait_until_finished()


def asynchronous_here() -> bool:
  """Whether a run on this process's backend saves asynchronously: on a GPU or TPU (see the module docstring)."""
  import jax

  return jax.default_backend() != "cpu"


class Saver:
  """A run's checkpoint writer for the length of its training: :func:`save`, or asynchronous saves.

  Asynchronous: ``save`` returns once the state is on the host; the write finishes in the background,
  and the next ``save`` (or ``close``) waits for it first, so one write is in flight at most and a
  failed write is reported by the next call. ``close`` waits for the last one.
  """

  def __init__(self, workdir: str | os.PathLike, asynchronous: bool):
    self.workdir, self.asynchronous = workdir, asynchronous
    self._manager = None
    self._writing: int | None = None  # the epoch being written in the background

  def save(self, epoch: int, state: Any) -> None:
    if not self.asynchronous:
      save(self.workdir, epoch, state)
      return
    import orbax.checkpoint as ocp

    self.wait()
    with _storage_errors(self.workdir, epoch), _quiet_orbax():
      if self._manager is None:
        self._manager = _manager(self.workdir, create=True, asynchronous=True)
      self._manager.save(epoch, args=ocp.args.StandardSave(state), force=True)
    self._writing = epoch

  def wait(self) -> None:
    """Returns when the checkpoint being written (if any) is complete; StorageError if it failed."""
    if self._writing is not None:
      epoch, self._writing = self._writing, None
      with _storage_errors(self.workdir, epoch), _quiet_orbax():
        self._manager.wait_until_finished()

  def close(self) -> None:
    try:
      self.wait()
    finally:
      if self._manager is not None:
        manager, self._manager = self._manager, None
        manager.close()


class _OrbaxErrors(logging.Filter):
  """Drops the errors orbax's writer threads log (with tracebacks) for a save that then raises: the save's
  exception says it once, as one line (a full disk: StorageError)."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not (record.levelno >= logging.ERROR and f"{os.sep}orbax{os.sep}" in record.pathname)


@contextlib.contextmanager
def _quiet_orbax():
  absl_logger, only = logging.getLogger("absl"), _OrbaxErrors()  # orbax logs through absl's logger
  absl_logger.addFilter(only)
  for handler in absl_logger.handlers + logging.getLogger().handlers:
    handler.addFilter(only)
  try:
    yield
  finally:
    absl_logger.removeFilter(only)
    for handler in absl_logger.handlers + logging.getLogger().handlers:
      handler.removeFilter(only)


def discard_after(workdir: str | os.PathLike, epoch: int) -> None:
  """Deletes the checkpoints after ``epoch`` (a run that goes back to ``epoch`` saves them anew)."""
  later = [e for e in epochs(workdir) if e > epoch]
  if later:
    with _manager(workdir, create=False) as manager:
      for step in later:
        manager.delete(step)


def _first_line(error: Exception) -> str:
  text = str(error).strip()
  return f"{type(error).__name__}: {text.splitlines()[0][:200]}" if text else type(error).__name__


def restore(workdir: str | os.PathLike, target: Any, epoch: int | None = None) -> tuple[Any, int]:
  """The state saved at ``epoch`` (default: the newest that restores) in the structure of ``target``.

  Without ``epoch``, a checkpoint that fails to restore is skipped with a warning for the one before;
  DataError if none restores (naming the newest and why).
  """
  import orbax.checkpoint as ocp

  candidates = [epoch] if epoch is not None else list(reversed(epochs(workdir)))
  if not candidates:
    raise DataError(f"{Path(workdir) / CHECKPOINT_DIR}: no checkpoint found; train the run first")
  failures, damaged = [], []
  for candidate in candidates:
    path = Path(workdir) / CHECKPOINT_DIR / str(candidate)
    try:
      with _manager(workdir, create=False) as manager:
        state = manager.restore(candidate, args=ocp.args.StandardRestore(target))
    except Exception as e:  # orbax and tensorstore raise many kinds for a damaged checkpoint
      failures.append(f"{path} ({_first_line(e)})")
      damaged.append(path)
      continue
    if failures:
      # Kept, but out of the way: the epochs after this one are trained again and checkpointed anew.
      aside = Path(workdir) / DAMAGED_DIR
      aside.mkdir(exist_ok=True)
      for path in damaged:
        path.rename(aside / f"{path.name}.{len(list(aside.iterdir()))}")
      log.warning("skipped checkpoint(s) that do not restore: %s (moved to %s); resuming from epoch %d",
                  "; ".join(failures), aside, candidate)  # fmt: skip
    return state, candidate
  raise DataError(
    f"cannot restore {failures[0]}"
    + (f", nor the older {'; '.join(failures[1:])}" if len(failures) > 1 else "")
    + "; move the checkpoints folder away to train this run from the start"
  )


def last_recorded_epoch(run_log) -> int:
  """The last epoch ``run_log`` (a ``runlog.RunLog``) has a metrics line of; 0 for none."""
  records = files.read_jsonl(run_log.metrics_path)
  return records[-1]["epoch"] if records else 0


def resume(members: Sequence[Any], program: Any) -> int:
  """Loads each member's newest checkpoint that restores into ``program`` (a ``programs.Program``); the
  epoch the group goes on from. ``members``: ``train.fit``'s, each with its ``config``, ``workdir`` and ``run_log``.

  A damaged newest checkpoint is passed over for the one before it (``checkpoints.restore``). Members
  of a group go on together, from the last epoch every one of them has; one that is ahead goes back to
  it (its epochs come out the same), or, where its checkpoint of that epoch is gone, the group starts over.
  """
  if not members[0].config["checkpoint"]:
    return 0
  templates = program.states()
  states, reached = [], []
  for member, template in zip(members, templates, strict=True):
    if latest_epoch(member.workdir) is None:
      states.append(template)
      reached.append(0)
    else:
      state, epoch = restore(member.workdir, template)
      states.append(state)
      reached.append(epoch)
  recorded = [
    last_recorded_epoch(m.run_log) for m in members
  ]  # a checkpoint ahead of the metrics: its epoch is trained again
  for member, epoch, lines in zip(members, reached, recorded, strict=True):
    if epoch > lines:
      log.warning("%s: checkpoint of epoch %d but metrics through epoch %d only (a line lost to a kill); "
                  "epoch %d is trained again", member.workdir, epoch, lines, lines + 1)  # fmt: skip
  done = min(min(epoch, lines) for epoch, lines in zip(reached, recorded, strict=True))
  for i, member in enumerate(members):
    if reached[i] > done and done > 0:
      try:
        states[i] = restore(member.workdir, templates[i], epoch=done)[0]
      except DataError as e:
        log.warning("%s: no checkpoint of epoch %d to go back to with its group (%s); the group starts over",
                    member.workdir, done, e)  # fmt: skip
        done = 0
  if done == 0:
    states = templates
  for member in members:
    discard_after(member.workdir, done)  # epochs after it are trained again and saved anew
  if done:
    program.load(states)
    log.info("%s: resuming after epoch %d", ", ".join(str(m.workdir) for m in members), done)
  return done
