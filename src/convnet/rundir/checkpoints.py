"""Orbax checkpoints of a run's train state, one per epoch, in ``<workdir>/checkpoints/<epoch>``.

Orbax writes each checkpoint to a temporary folder and renames it when complete, so a killed run
leaves the last complete epoch to resume from. A checkpoint that is there but does not restore
(a file truncated or garbled after the fact) is passed over, with a warning naming it, for the
newest one that does (the last two are kept); the damaged one is moved to ``damaged_checkpoints/``.
"""

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

from convnet.errors import DataError, StorageError, storage_problem

CHECKPOINT_DIR = "checkpoints"
DAMAGED_DIR = "damaged_checkpoints"
log = logging.getLogger("convnet")


def _manager(workdir: str | os.PathLike, create: bool):
  import orbax.checkpoint as ocp  # imported on use: orbax is slow to import

  options = ocp.CheckpointManagerOptions(max_to_keep=2, create=create, enable_async_checkpointing=False)
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


def save(workdir: str | os.PathLike, epoch: int, state: Any) -> None:
  import orbax.checkpoint as ocp

  try:
    with _quiet_orbax(), _manager(workdir, create=True) as manager:
      manager.save(epoch, args=ocp.args.StandardSave(state), force=True)
      manager.wait_until_finished()
  except Exception as e:
    problem = storage_problem(e)
    if problem is None:
      raise
    raise StorageError(
      f"{Path(workdir) / CHECKPOINT_DIR / str(epoch)}: cannot save the checkpoint ({problem}); "
      f"free some space and re-run the same command to resume from epoch {epoch - 1}"
    ) from None


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
