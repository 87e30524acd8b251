"""Where a sweep's trials run: here (``'local'``: one after another, or side by side on a host's
accelerators), or side by side on Ray (``'ray'``).

``base`` holds what every executor shares (a task, its attempt, its outcome); ``local`` and ``on_ray``
run tasks. :func:`start` makes the one ``sweep.executor.name`` asks for, ready to run: for Ray it
connects to the cluster and checks that a trial fits there, so that a sweep whose executor cannot run
anything fails before it writes anything. Ray is an optional extra: ``on_ray`` imports it only when a Ray executor starts.
"""

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from convnet.sweep.executors import base, local, on_ray
from convnet.sweep.executors.base import Deliver, Task


class Executor(Protocol):
  name: str

  def run(self, tasks: Sequence[Task], deliver: Deliver) -> None:
    """Runs ``tasks``; ``deliver(task, outcomes)`` is called in this process as each one ends."""

  def close(self) -> None:
    """Lets go of what :func:`start` took (a Ray connection)."""


def start(
  executor: Mapping[str, Any], sweep_dir: str | Path, backend: str | None = None, num_devices: int | None = None
) -> Executor:
  """The executor ``sweep.executor`` names, connected and checked (ConfigError if it cannot run a trial);
  ``num_devices``: each trial's (the local executor places trials side by side by it)."""
  base.check_config(executor)
  if executor.get("name", "local") == "ray":
    return on_ray.RayExecutor(executor, sweep_dir, backend)
  return local.LocalExecutor(sweep_dir, *local.side_by_side(executor, num_devices))
