"""Orbax checkpoints of a run's train state, one per epoch, in ``<workdir>/checkpoints/<epoch>``.

Orbax writes each checkpoint to a temporary folder and renames it when complete, so a killed run
leaves the last complete epoch to resume from.
"""

import os
from pathlib import Path
from typing import Any

from convnet.errors import DataError

CHECKPOINT_DIR = "checkpoints"


def _manager(workdir: str | os.PathLike, create: bool):
  import orbax.checkpoint as ocp  # imported on use: orbax is slow to import

  options = ocp.CheckpointManagerOptions(max_to_keep=2, create=create, enable_async_checkpointing=False)
  return ocp.CheckpointManager(Path(workdir).absolute() / CHECKPOINT_DIR, options=options)


def latest_epoch(workdir: str | os.PathLike) -> int | None:
  """The last checkpointed epoch in ``workdir``, or None if there is none."""
  if not (Path(workdir) / CHECKPOINT_DIR).is_dir():
    return None
  with _manager(workdir, create=False) as manager:
    return manager.latest_step()


def save(workdir: str | os.PathLike, epoch: int, state: Any) -> None:
  import orbax.checkpoint as ocp

  with _manager(workdir, create=True) as manager:
    manager.save(epoch, args=ocp.args.StandardSave(state), force=True)
    manager.wait_until_finished()


def restore(workdir: str | os.PathLike, target: Any, epoch: int | None = None) -> tuple[Any, int]:
  """Restores the state saved at ``epoch`` (default: the last) into the structure of ``target``."""
  import orbax.checkpoint as ocp

  epoch = latest_epoch(workdir) if epoch is None else epoch
  if epoch is None:
    raise DataError(f"{Path(workdir) / CHECKPOINT_DIR}: no checkpoint found; train the run first")
  with _manager(workdir, create=False) as manager:
    try:
      state = manager.restore(epoch, args=ocp.args.StandardRestore(target))
    except (FileNotFoundError, ValueError, KeyError) as e:
      raise DataError(
        f"{Path(workdir) / CHECKPOINT_DIR / str(epoch)}: cannot restore this checkpoint into the "
        f"config's model ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
      ) from None
  return state, epoch
