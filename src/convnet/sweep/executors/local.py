"""The local executor: a sweep's tasks here, one after another (timings comparable: nothing else of the
sweep runs beside a trial)."""

from collections.abc import Sequence
import logging
from pathlib import Path

from convnet.sweep.executors.base import Deliver, Task, attempt

log = logging.getLogger("convnet")


class LocalExecutor:
  """Runs tasks in this process, one at a time."""

  name = "local"

  def __init__(self, sweep_dir: str | Path):
    self.sweep_dir = Path(sweep_dir)

  def run(self, tasks: Sequence[Task], deliver: Deliver) -> None:
    for task in tasks:
      log.info("trial %s", " + ".join(task.names))
      deliver(task, attempt(task, str(self.sweep_dir)))

  def close(self) -> None:
    pass
