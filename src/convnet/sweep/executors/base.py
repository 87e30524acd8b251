"""The executors' shared vocabulary: a task, its attempt, and the outcome handed back to the driver.

Every executor runs the same unit of work, :func:`attempt`: one trial (or, with ``seeds_together``,
the seeds of one configuration trained as one program) in its own ``DIR/trials/<name>/``, with the
same training loop, ``train.fit``. Each hands the trial's *outcome* back to the sweep's driver
(``convnet.sweep.driver``), which is the only writer of ``results.jsonl``: a line per trial, appended
as the trial ends. An outcome carries what the result line needs plus where and beside how many
other trials it ran (``node``, ``concurrent_trials``), because trials that share a machine slow each other.
"""

from collections.abc import Callable, Mapping
import contextlib
import dataclasses
import logging
import os
from pathlib import Path
import socket
import time
from typing import Any

from convnet import runtime, train
from convnet.errors import ConfigError, ConvnetError, Interrupted, StorageError, TrainingError, storage_problem
from convnet.rundir import locks
from convnet.sweep import store

log = logging.getLogger("convnet")
EXECUTORS = ("local", "ray")


@dataclasses.dataclass(frozen=True)
class Task:
  """What an executor runs at once: one trial, or the seeds of one configuration (``seeds_together``)."""

  names: tuple[str, ...]
  configs: tuple[dict[str, Any], ...]  # each trial's full config
  flops: float  # per trial and example, for the ETA

  def directories(self, sweep_dir: str | os.PathLike) -> list[str]:
    return [str(store.SweepStore(sweep_dir).trial_dir(name)) for name in self.names]


Deliver = Callable[[Task, list[dict[str, Any]]], None]  # the driver's hand: records a task's outcomes


def check_config(executor: Mapping[str, Any]) -> None:
  """ConfigError naming a bad ``sweep.executor`` field and what is allowed."""
  name = executor.get("name", "local")
  if name not in EXECUTORS:
    raise ConfigError(f"sweep.executor.name={name!r} is not one of {EXECUTORS}")
  failures = executor.get("max_failures", 2)
  if not isinstance(failures, int) or isinstance(failures, bool) or failures < 0:
    raise ConfigError(
      f"sweep.executor.max_failures={failures!r}: give the number of retries of a lost worker, an integer >= 0"
    )
  resources = dict(executor.get("trial_resources") or {})
  unknown = set(resources) - {"cpu", "gpu"}
  if unknown:
    raise ConfigError(
      f"sweep.executor.trial_resources has {sorted(unknown)}; it takes 'cpu' and 'gpu' (fractions allowed)"
    )
  for kind, value in resources.items():
    if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0):
      raise ConfigError(f"sweep.executor.trial_resources.{kind}={value!r}: give a number >= 0 (fractions allowed)")
  if resources.get("cpu") == 0 and not resources.get("gpu"):
    raise ConfigError("sweep.executor.trial_resources.cpu=0 with no gpu: a trial needs some resource, e.g. cpu=1")
  together = executor.get("side_by_side")
  if together is not None and (not isinstance(together, int) or isinstance(together, bool) or together < 1):
    raise ConfigError(
      f"sweep.executor.side_by_side={together!r}: give None (one trial per device on a GPU/TPU host, one at a "
      "time on the CPU) or a number of trials >= 1"
    )
  address = executor.get("ray_address")
  if address is not None and (not isinstance(address, str) or not address.strip()):
    raise ConfigError(f"sweep.executor.ray_address={address!r}: give None (start a local Ray), 'auto' or 'host:port'")


def failure(error: BaseException) -> tuple[str, str]:
  """(cause, message) of a trial that raised ``error``: 'training' (NaN, divergence), 'config' (a bad
  value, an impossible shape), 'storage' (a full disk: the sweep stops) or 'environment' (the rest)."""
  problem = storage_problem(error)
  if problem is not None or isinstance(error, StorageError):
    return "storage", problem or str(error)
  if isinstance(error, TrainingError):
    return "training", str(error)
  if isinstance(error, ConfigError):
    return "config", str(error)
  return "environment", str(error) if isinstance(error, ConvnetError) else f"{type(error).__name__}: {error}"


def attempt(
  task: Task, sweep_dir: str, *, expect_holder: str | None = None, lock_wait: float = 0.0, cache: bool = True
) -> list[dict]:
  """Trains ``task``'s trials in their directories under ``sweep_dir``; one outcome per trial.

  An outcome is ``{"name", "status", "node", "started", "ended", ...}`` with the summary's fields for
  a trained trial, or ``error`` and ``cause`` (see :func:`failure`) for one that raised. ``expect_holder``
  is the sweep lock's text as the driver wrote it: a worker that reads something else does not see the
  driver's directory (cause ``'unshared'``). ``cache=False``: the caller holds the compilation cache
  (trials side by side in threads). Ctrl-C (Interrupted) is raised, not an outcome.
  """
  node, started = socket.gethostname(), time.time()
  if expect_holder is not None and locks.holder(sweep_dir) != expect_holder:
    message = (
      f"the sweep directory {sweep_dir} is not the driver's on node {node} (it is missing there or another "
      "sweep holds it); on a cluster --workdir must be storage that every node sees at the same path (NFS, a "
      "shared or mounted bucket)"
    )
    return [outcome(name, node, started, status="failed", error=message, cause="unshared") for name in task.names]
  directories = task.directories(sweep_dir)
  try:
    # Compiled programs are kept per node: a machine cannot run another CPU's executables.
    where = Path(sweep_dir) / runtime.COMPILATION_CACHE_DIR / node
    with runtime.compilation_cache(where) if cache else contextlib.nullcontext():
      summaries = train.fit(task.configs, directories, lock_wait=lock_wait)
  except Interrupted:
    raise
  except Exception as e:  # noqa: BLE001 - a broken trial is an outcome, not the end of the sweep
    cause, message = failure(e)
    if cause == "environment" and not isinstance(e, ConvnetError):
      log.exception("trial %s failed", ", ".join(task.names))
    return [outcome(name, node, started, status="failed", error=message, cause=cause) for name in task.names]
  return [
    outcome(name, node, started, summary=summary)
    if summary["status"] != "failed"  # failed on its own: a NaN or diverged loss
    else outcome(name, node, started, status="failed", error=summary.get("error", "failed"), cause="training")
    for name, summary in zip(task.names, summaries, strict=True)
  ]


def outcome(name: str, node: str, started: float, summary: Mapping[str, Any] | None = None, **fields) -> dict:
  """A trial's outcome: from its summary (trained), or ``status``, ``error`` and ``cause`` (not)."""
  if summary is not None:
    fields = {"status": summary["status"], "summary": dict(summary)}
  return {"name": name, "node": node, "started": started, "ended": time.time(), "concurrent_trials": 1, **fields}
