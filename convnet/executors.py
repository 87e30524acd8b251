"""Where a sweep's trials run: here, one after another (``'local'``), or side by side on Ray (``'ray'``).

Both executors run the same unit of work, :func:`attempt`: one trial (or, with ``seeds_together``,
the seeds of one configuration trained as one program) in its own ``DIR/trials/<name>/``, with the
same ``train.train_and_evaluate``. Each hands the trial's *outcome* back to the sweep's driver
(``convnet.sweep``), which is the only writer of ``results.jsonl``: a line per trial, appended as
the trial ends. An outcome carries what the result line needs plus where and beside how many other
trials it ran (``node``, ``concurrent_trials``), because trials that share a machine slow each other.

The Ray executor uses plain Ray tasks, not Ray Tune: a trial is a deterministic function of its
config and directory, it resumes from its own epoch checkpoints, and the sweep already knows which
trials are recorded. A task that loses its worker (killed, out of memory, node lost) is run again by
Ray up to ``config.max_failures`` times and resumes from the trial's last checkpoint; a driver
killed mid-sweep is resumed by running the same command, which skips recorded trials. Tune's own
experiment state would be a second record of the same facts to keep in agreement with the first.

A local Ray started here (``ray_address=None``) listens on the loopback address only, runs without
its dashboard and keeps Ray's token authentication on. Ray's workers get
``XLA_PYTHON_CLIENT_PREALLOCATE=false``, so that trials sharing a GPU (fractional ``gpu``) allocate
what they use instead of 75% of the GPU each.
"""

from collections.abc import Callable, Mapping, Sequence
import dataclasses
import logging
import os
from pathlib import Path
import socket
import sys
import time
from typing import Any
import warnings

from convnet import locks, runtime
from convnet.errors import ConfigError, ConvnetError, Interrupted, StorageError, TrainingError, storage_problem

log = logging.getLogger("convnet")
EXECUTORS = ("local", "ray")
TRIAL_LOCK_WAIT = 120.0  # seconds a trial waits for a worker of a killed driver to let its directory go
WORKER_ENV = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}  # trials that share a GPU allocate what they use


@dataclasses.dataclass(frozen=True)
class Task:
  """What an executor runs at once: one trial, or the seeds of one configuration (``seeds_together``)."""

  names: tuple[str, ...]
  configs: tuple[dict[str, Any], ...]  # each trial's full config
  flops: float  # per trial and example, for the ETA

  def directories(self, sweep_dir: str | os.PathLike) -> list[str]:
    return [str(Path(sweep_dir) / TRIALS_DIR / name) for name in self.names]


TRIALS_DIR = "trials"
Deliver = Callable[[Task, list[dict[str, Any]]], None]  # the driver's hand: records a task's outcomes


def check_config(config: Mapping[str, Any]) -> None:
  """ConfigError naming the bad executor field and what is allowed."""
  executor = config.get("executor", "local")
  if executor not in EXECUTORS:
    raise ConfigError(f"executor={executor!r} is not one of {EXECUTORS}")
  failures = config.get("max_failures", 2)
  if not isinstance(failures, int) or isinstance(failures, bool) or failures < 0:
    raise ConfigError(f"max_failures={failures!r}: give the number of retries of a lost worker, an integer >= 0")
  resources = dict(config.get("trial_resources") or {})
  unknown = set(resources) - {"cpu", "gpu"}
  if unknown:
    raise ConfigError(f"trial_resources has {sorted(unknown)}; it takes 'cpu' and 'gpu' (fractions allowed)")
  for kind, value in resources.items():
    if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0):
      raise ConfigError(f"trial_resources.{kind}={value!r}: give a number >= 0 (fractions allowed)")
  if resources.get("cpu") == 0 and not resources.get("gpu"):
    raise ConfigError("trial_resources.cpu=0 with no gpu: a trial needs some resource, e.g. cpu=1")
  address = config.get("ray_address")
  if address is not None and (not isinstance(address, str) or not address.strip()):
    raise ConfigError(f"ray_address={address!r}: give None (start a local Ray), 'auto' or 'host:port'")


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


def attempt(task: Task, sweep_dir: str, *, expect_holder: str | None = None, lock_wait: float = 0.0) -> list[dict]:
  """Trains ``task``'s trials in their directories under ``sweep_dir``; one outcome per trial.

  An outcome is ``{"name", "status", "node", "started", "ended", ...}`` with the summary's fields for
  a trained trial, or ``error`` and ``cause`` (see :func:`failure`) for one that raised. ``expect_holder``
  is the sweep lock's text as the driver wrote it: a worker that reads something else does not see the
  driver's directory (cause ``'unshared'``). Ctrl-C (Interrupted) is raised, not an outcome.
  """
  from convnet import ensemble, train

  node, started = socket.gethostname(), time.time()
  if expect_holder is not None and locks.holder(sweep_dir) != expect_holder:
    message = (
      f"the sweep directory {sweep_dir} is not the driver's on node {node} (it is missing there or another "
      "sweep holds it); on a cluster --workdir must be storage that every node sees at the same path (NFS, a "
      "shared or mounted bucket)"
    )
    return [_outcome(name, node, started, status="failed", error=message, cause="unshared") for name in task.names]
  directories = task.directories(sweep_dir)
  try:
    if len(task.configs) == 1:
      summaries = [train.train_and_evaluate(task.configs[0], directories[0], lock_wait=lock_wait)]
    else:
      summaries = ensemble.train_seeds(task.configs, directories, lock_wait=lock_wait)
  except Interrupted:
    raise
  except Exception as e:  # noqa: BLE001 - a broken trial is an outcome, not the end of the sweep
    cause, message = failure(e)
    if cause == "environment" and not isinstance(e, ConvnetError):
      log.exception("trial %s failed", ", ".join(task.names))
    return [_outcome(name, node, started, status="failed", error=message, cause=cause) for name in task.names]
  return [
    _outcome(name, node, started, summary=summary)
    if summary["status"] != "failed"  # a seed trained with others that failed on its own (train_seeds)
    else _outcome(name, node, started, status="failed", error=summary.get("error", "failed"), cause="training")
    for name, summary in zip(task.names, summaries, strict=True)
  ]


def _outcome(name: str, node: str, started: float, summary: Mapping[str, Any] | None = None, **fields) -> dict:
  if summary is not None:
    fields = {"status": summary["status"], "summary": dict(summary)}
  return {"name": name, "node": node, "started": started, "ended": time.time(), "concurrent_trials": 1, **fields}


def run_local(tasks: Sequence[Task], config: Mapping[str, Any], sweep_dir: Path, deliver: Deliver) -> None:
  """Runs the tasks here, one after another (timings comparable: nothing else of the sweep runs)."""
  del config
  for task in tasks:
    log.info("trial %s", " + ".join(task.names))
    deliver(task, attempt(task, str(sweep_dir)))


# ---------------------------------------------------------------------------------------------- Ray


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

  runtime.configure_xla(backend)  # before this worker's JAX backend starts
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
  return [{**outcome, "ray_node": node} for outcome in outcomes], most


def _import_ray():
  try:
    import ray
  except ImportError:
    raise ConfigError(
      "executor='ray' needs Ray, which is not installed; install it with: pip install 'convnet[ray]' "
      "(or pip install -e '.[ray]' in a checkout)"
    ) from None
  return ray


def connect(address: str | None, temp_dir: str | None = None) -> bool:
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
    ray.init(address="local", include_dashboard=False, runtime_env=runtime_env, _temp_dir=temp_dir,
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


def _resources(config: Mapping[str, Any], cluster: Mapping[str, float]) -> dict[str, float]:
  wanted = dict(config.get("trial_resources") or {})
  cpu = wanted.get("cpu")
  gpu = wanted.get("gpu")
  if gpu is None:  # None: a whole GPU per trial where the cluster has GPUs, none elsewhere
    gpu = 1.0 if cluster.get("GPU", 0) > 0 else 0.0
  resources = {"num_cpus": 1.0 if cpu is None else float(cpu), "num_gpus": float(gpu)}
  for key, have in (("num_cpus", cluster.get("CPU", 0)), ("num_gpus", cluster.get("GPU", 0))):
    if resources[key] > have:
      raise ConfigError(
        f"trial_resources.{key[4:-1]}={resources[key]:g}: the Ray cluster has {have:g} in all; ask for at most that"
      )
  return resources


def run_ray(tasks: Sequence[Task], config: Mapping[str, Any], sweep_dir: Path, deliver: Deliver) -> None:
  """Runs the tasks on Ray, as many at once as ``trial_resources`` allow; delivers each as it ends."""
  address = config.get("ray_address")
  sweep_dir = Path(sweep_dir).resolve()  # workers start in directories of their own, on other nodes too
  started = connect(address)
  import ray

  try:
    resources = _resources(config, ray.cluster_resources())
    retries = int(config.get("max_failures", 2))
    log.info("Ray: %s; each trial takes %s; a lost worker is retried %d times",
             _describe(ray.cluster_resources()), resources, retries)  # fmt: skip
    counter = ray.remote(num_cpus=0)(_Concurrency).remote()
    remote = ray.remote(_attempt_on_ray).options(max_retries=retries, retry_exceptions=False, **resources)
    holder = locks.holder(sweep_dir)
    pending = {remote.remote(t, str(sweep_dir), holder, counter, config.get("backend")): t for t in tasks}
    try:
      while pending:
        [ready], _ = ray.wait(list(pending), num_returns=1)
        task = pending.pop(ready)
        try:
          outcomes, most = ray.get(ready)
          most = ray.get(most)
          outcomes = [{**outcome, "concurrent_trials": most} for outcome in outcomes]
        except ray.exceptions.RayError as e:  # its worker was lost max_failures + 1 times
          reason = str(e).strip().splitlines()[0][:300]
          message = f"its Ray worker was lost {retries + 1} times ({reason})"
          counter.forget.remote(list(task.names))
          outcomes = [_outcome(n, "?", time.time(), status="failed", error=message, cause="environment")
                      for n in task.names]  # fmt: skip
        deliver(task, outcomes)
    except KeyboardInterrupt:
      for ref in pending:
        ray.cancel(ref, force=True)
      raise Interrupted(
        f"interrupted with {len(pending)} task(s) unfinished; re-run the same command to resume"
      ) from None
  finally:
    if started:
      ray.shutdown()


def _describe(resources: Mapping[str, float]) -> str:
  return ", ".join(f"{resources[k]:g} {k}" for k in ("CPU", "GPU") if resources.get(k))


RUNNERS = {"local": run_local, "ray": run_ray}


def run(tasks: Sequence[Task], config: Mapping[str, Any], sweep_dir: Path, deliver: Deliver) -> None:
  """Runs ``tasks`` with ``config.executor``; ``deliver(task, outcomes)`` is called in this process."""
  RUNNERS[config.get("executor", "local")](tasks, config, sweep_dir, deliver)
