"""The Ray executor: a sweep's tasks as Ray tasks, side by side on a local Ray or a cluster.

The Ray executor uses plain Ray tasks, not Ray Tune: a trial is a deterministic function of its
config and directory, it resumes from its own epoch checkpoints, and the sweep already knows which
trials are recorded. A task that loses its worker (killed, out of memory, node lost) is run again by
Ray up to ``sweep.executor.max_failures`` times and resumes from the trial's last checkpoint; a driver
killed mid-sweep is resumed by running the same command, which skips recorded trials. Tune's own
experiment state would be a second record of the same facts to keep in agreement with the first.

A local Ray started here (``sweep.executor.ray_address=None``) listens on the loopback address only, runs without
its dashboard and keeps Ray's token authentication on. Ray's workers get
``XLA_PYTHON_CLIENT_PREALLOCATE=false``, so that trials sharing a GPU (fractional ``gpu``) allocate
what they use instead of 75% of the GPU each.

:class:`RayExecutor` connects when it is made (the driver makes it before it writes anything, so an
unreachable cluster, or trial resources it does not have, is one line and nothing written), runs every
batch of tasks of the sweep (each rung's, then the last) on that one connection, and lets go at the end.
"""

from collections.abc import Mapping, Sequence
import logging
import os
from pathlib import Path
import socket
import sys
import time
from typing import Any
import warnings

from convnet import runtime
from convnet.errors import ConfigError, Interrupted
from convnet.rundir import locks
from convnet.sweep.executors.base import Deliver, Task, attempt, outcome

log = logging.getLogger("convnet")
TRIAL_LOCK_WAIT = 120.0  # seconds a trial waits for a worker of a killed driver to let its directory go
WORKER_ENV = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}  # trials that share a GPU allocate what they use


class _Concurrency:
  """A Ray actor that counts the trials running on each node: a trial's count is the most that ran
  on its node at any moment while it ran (itself included)."""

  def __init__(self):
    self.running: dict[str, dict[str, int]] = {}  # node -> {trial: the most seen while it ran}

  def begin(self, node: str, names: list[str]) -> None:
    for other in self.running.values():  # a retried trial may restart on another node
      for name in names:
        other.pop(name, None)
    here = self.running.setdefault(node, {})
    here.update(dict.fromkeys(names, 0))
    for name in here:
      here[name] = max(here[name], len(here))

  def end(self, node: str, names: list[str]) -> int:
    here = self.running.get(node, {})
    return max([here.pop(name, 1) for name in names] or [1])

  def forget(self, names: list[str]) -> None:
    for here in self.running.values():
      for name in names:
        here.pop(name, None)


def _attempt_on_ray(task: Task, sweep_dir: str, expect_holder: str, counter, backend: str | None):
  """A Ray task: :func:`attempt` on a worker; returns its outcomes and a reference to its concurrency.

  The counter is told without waiting (a task blocked in ``ray.get`` lends its CPUs to another task,
  which would then run beside it); the driver resolves the count.
  """
  import ray

  runtime.configure_xla(backend, bool(task.configs[0].get("deterministic")))  # before the worker's backend starts
  logger = logging.getLogger("convnet")
  if not logger.handlers:  # the worker's lines reach the driver's terminal through Ray's log forwarding
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
  node = ray.get_runtime_context().get_node_id()
  counter.begin.remote(node, list(task.names))
  try:
    outcomes = attempt(task, sweep_dir, expect_holder=expect_holder, lock_wait=TRIAL_LOCK_WAIT)
  finally:
    most = counter.end.remote(node, list(task.names))
  return [{**each, "ray_node": node} for each in outcomes], most


def _import_ray():
  try:
    import ray
  except ImportError:
    raise ConfigError(
      "executor='ray' needs Ray, which is not installed; install it with: pip install 'convnet[ray]' "
      "(or pip install -e '.[ray]' in a checkout)"
    ) from None
  return ray


def connect(address: str | None) -> bool:
  """Starts a local Ray (address None) or joins the cluster at ``address``; True if this process
  connected (and so disconnects at the end: ``ray.shutdown`` stops a local Ray, leaves a cluster running).

  A local Ray listens on 127.0.0.1 only (Ray binds its servers to the node's address, which is the
  loopback address when Ray is told there is no cluster: ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, read
  when ``ray`` is imported), has no dashboard and uses token authentication (``RAY_AUTH_MODE=token``;
  Ray makes a token in ``~/.ray/auth_token`` unless ``RAY_AUTH_TOKEN`` or ``RAY_AUTH_TOKEN_PATH`` gives one).
  """
  if address is None:
    if "ray" not in sys.modules:
      os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    if os.environ.get("RAY_AUTH_MODE", "token").lower() != "token":
      log.warning(
        "RAY_AUTH_MODE=%s ignored: convnet's local Ray uses token authentication", os.environ["RAY_AUTH_MODE"]
      )
    os.environ["RAY_AUTH_MODE"] = "token"
  ray = _import_ray()
  if ray.is_initialized():  # e.g. a notebook that called ray.init() itself: use it, leave it running
    return False
  runtime_env = {"env_vars": dict(WORKER_ENV)}
  # Ray fork-execs its processes at once; JAX's warning about fork() in a threaded process does not apply.
  warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
  if address is None:
    ray.init(address="local", include_dashboard=False, runtime_env=runtime_env,
             log_to_driver=True, logging_level=logging.WARNING)  # fmt: skip
    node_ip = ray.util.get_node_ip_address()
    if node_ip not in ("127.0.0.1", "::1", "localhost"):
      ray.shutdown()
      raise ConfigError(
        f"the local Ray would listen on {node_ip}, not on the loopback address only (ray was imported before "
        "convnet could configure it); start Ray in this process after convnet does, or set ray_address"
      )
    return True
  _check_reachable(address)
  try:
    ray.init(address=address, runtime_env=runtime_env, log_to_driver=True, logging_level=logging.WARNING)
  except (ConnectionError, RuntimeError, ValueError) as e:
    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise ConfigError(
      f"ray_address={address!r}: cannot join a Ray cluster there ({reason[:300]}); start one with `ray start "
      "--head` (and the same RAY_AUTH_TOKEN), or leave ray_address unset to start a local Ray"
    ) from None
  return True


def _check_reachable(address: str, timeout: float = 5.0) -> None:
  """ConfigError at once if ``host:port`` does not answer (Ray itself would retry for minutes)."""
  host, _, port = address.rpartition(":")
  if address == "auto" or "://" in address:
    return
  if not host or not port.isdigit():
    raise ConfigError(f"ray_address={address!r}: give 'auto', 'host:port' (e.g. 127.0.0.1:6379) or None")
  try:
    socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
  except OSError as e:
    raise ConfigError(
      f"ray_address={address!r}: no Ray cluster answers there ({e.strerror or e}); start one with `ray start "
      "--head` on that machine, or leave ray_address unset to start a local Ray"
    ) from None


def _resources(executor: Mapping[str, Any], cluster: Mapping[str, float]) -> dict[str, float]:
  wanted = dict(executor.get("trial_resources") or {})
  cpu = wanted.get("cpu")
  gpu = wanted.get("gpu")
  if gpu is None:  # None: a whole GPU per trial where the cluster has GPUs, none elsewhere
    gpu = 1.0 if cluster.get("GPU", 0) > 0 else 0.0
  resources = {"num_cpus": 1.0 if cpu is None else float(cpu), "num_gpus": float(gpu)}
  for key, have in (("num_cpus", cluster.get("CPU", 0)), ("num_gpus", cluster.get("GPU", 0))):
    if resources[key] > have:
      raise ConfigError(
        f"sweep.executor.trial_resources.{key[4:-1]}={resources[key]:g}: the Ray cluster has {have:g} in all; ask for at most that"
      )
  return resources


class RayExecutor:
  """Runs tasks on Ray, as many at once as ``trial_resources`` allow; delivers each as it ends."""

  name = "ray"

  def __init__(self, executor: Mapping[str, Any], sweep_dir: str | os.PathLike, backend: str | None = None):
    self.sweep_dir = Path(sweep_dir).resolve()  # workers start in directories of their own, on other nodes too
    self.backend = backend
    self.retries = int(executor.get("max_failures", 2))
    self.started = connect(executor.get("ray_address"))
    import ray

    try:
      self.resources = _resources(executor, ray.cluster_resources())
    except ConfigError:
      self.close()
      raise
    log.info("Ray: %s; each trial takes %s; a lost worker is retried %d times",
             _describe(ray.cluster_resources()), self.resources, self.retries)  # fmt: skip
    self.counter = None

  def run(self, tasks: Sequence[Task], deliver: Deliver) -> None:
    import ray

    if not tasks:
      return
    if self.counter is None:
      self.counter = ray.remote(num_cpus=0)(_Concurrency).remote()
    remote = ray.remote(_attempt_on_ray).options(max_retries=self.retries, retry_exceptions=False, **self.resources)
    holder = locks.holder(self.sweep_dir)
    pending = {remote.remote(t, str(self.sweep_dir), holder, self.counter, self.backend): t for t in tasks}
    try:
      while pending:
        [ready], _ = ray.wait(list(pending), num_returns=1)
        task = pending.pop(ready)
        try:
          outcomes, most = ray.get(ready)
          most = ray.get(most)
          outcomes = [{**each, "concurrent_trials": most} for each in outcomes]
        except ray.exceptions.RayError as e:  # its worker was lost max_failures + 1 times
          reason = str(e).strip().splitlines()[0][:300]
          message = f"its Ray worker was lost {self.retries + 1} times ({reason})"
          self.counter.forget.remote(list(task.names))
          outcomes = [outcome(n, "?", time.time(), status="failed", error=message, cause="environment")
                      for n in task.names]  # fmt: skip
        deliver(task, outcomes)
    except KeyboardInterrupt:
      for ref in pending:
        ray.cancel(ref, force=True)
      raise Interrupted(
        f"interrupted with {len(pending)} task(s) unfinished; re-run the same command to resume"
      ) from None

  def close(self) -> None:
    """Disconnects; a local Ray started here stops (a cluster keeps running)."""
    if self.started:
      import ray

      ray.shutdown()
      self.started = False


def _describe(resources: Mapping[str, float]) -> str:
  return ", ".join(f"{resources[k]:g} {k}" for k in ("CPU", "GPU") if resources.get(k))
