"""The local executor: a sweep's tasks in this process, one after another, or side by side on its devices.

One at a time (the default on the CPU) keeps timings comparable: nothing else of the sweep runs beside a
trial. On a host with several GPUs or TPUs, ``sweep.executor.side_by_side`` (None: one trial per group
of ``num_devices`` devices there, one at a time on the CPU; or a count) runs that many tasks at once,
each in its own thread on its own devices (``convnet.devices.assigned``), with no Ray: trials on
separate accelerators barely slow each other. Each outcome says beside how many trials it ran
(``concurrent_trials``) and each trial records its devices (``device_ids``). The driver's ``deliver``
is called in this (the calling) thread only. A Ctrl-C stops every running trial at its next safe point.
"""

from collections.abc import Mapping, Sequence
import concurrent.futures
import logging
from pathlib import Path
import socket
from typing import Any

from convnet import devices, interrupts, runtime
from convnet.errors import ConfigError, Interrupted
from convnet.sweep.executors.base import Deliver, Task, attempt

log = logging.getLogger("convnet")


def side_by_side(executor: Mapping[str, Any], num_devices: int | None) -> tuple[int, int]:
  """(tasks at once, devices per task) for ``sweep.executor.side_by_side`` and a trial's ``num_devices``."""
  available = devices.available_devices()
  per_task = num_devices or devices.default_count(available[0].platform, len(available))
  asked = executor.get("side_by_side")
  if asked is None:
    return (max(1, len(available) // per_task) if available[0].platform != "cpu" else 1), per_task
  if asked * per_task > len(available):
    raise ConfigError(
      f"sweep.executor.side_by_side={asked} with {per_task} device(s) per trial needs {asked * per_task} devices; "
      f"this machine has {len(available)} {available[0].platform} device(s): use 1..{len(available) // per_task}"
    )
  return asked, per_task


class LocalExecutor:
  """Runs tasks in this process: one at a time, or ``slots`` at once on their own devices."""

  name = "local"

  def __init__(self, sweep_dir: str | Path, slots: int = 1, per_task: int = 1):
    self.sweep_dir = Path(sweep_dir)
    self.slots, self.per_task = slots, per_task

  def run(self, tasks: Sequence[Task], deliver: Deliver) -> None:
    if self.slots <= 1 or len(tasks) <= 1:
      for task in tasks:
        log.info("trial %s", " + ".join(task.names))
        deliver(task, attempt(task, str(self.sweep_dir)))
      return
    available = devices.available_devices()
    free = [available[i * self.per_task : (i + 1) * self.per_task] for i in range(self.slots)]
    pending, running = list(tasks), {}
    # One compilation cache for the whole run: it is JAX's global setting, which threads must not flip.
    cache = Path(self.sweep_dir) / runtime.COMPILATION_CACHE_DIR / socket.gethostname()
    with runtime.compilation_cache(cache), interrupts.deferred():
      try:
        with concurrent.futures.ThreadPoolExecutor(self.slots, thread_name_prefix="trial") as pool:
          try:
            self._loop(pool, pending, running, free, deliver)
          except BaseException:
            interrupts.request()  # the trials still running stop at their next safe point; the pool waits
            raise
      finally:
        interrupts.clear()  # every thread has ended: a stop asked of them is not raised again here

  def _loop(self, pool, pending, running, free, deliver) -> None:
    stopped = None
    while pending or running:
      while pending and free and stopped is None:
        task, group = pending.pop(0), free.pop(0)
        log.info("trial %s on %s", " + ".join(task.names), ", ".join(str(d) for d in group))
        future = pool.submit(self._attempt, task, group)
        running[future] = (task, group, len(running) + 1)
      finished, _ = concurrent.futures.wait(running, timeout=0.2, return_when=concurrent.futures.FIRST_COMPLETED)
      if stopped is None and interrupts.requested():
        stopped = Interrupted("interrupted; re-run the same command to resume")  # the trials stop at safe points
      for future in finished:
        task, group, beside = running.pop(future)
        free.append(group)
        try:
          outcomes = future.result()
        except Interrupted as e:
          stopped = stopped or e
          interrupts.request()  # the other running trials stop too, at their next safe point
          continue
        most = max(beside, len(running) + 1)
        deliver(task, [{**o, "concurrent_trials": max(o.get("concurrent_trials", 1), most)} for o in outcomes])
    if stopped is not None:
      raise stopped

  def _attempt(self, task: Task, group) -> list[dict]:
    with devices.assigned(group):
      return attempt(task, str(self.sweep_dir), cache=False)

  def close(self) -> None:
    pass
