"""The devices a run uses: the backend check, the data-parallel mesh, and where arrays live on it.

Decided once, at run start (``train_and_evaluate``): the backend must be the one asked for
(``config.backend`` or ``JAX_PLATFORMS``), and a host with an accelerator must not have fallen back
to the CPU unless the CPU was asked for (:func:`check_backend`: one line saying why, never a silent
run 10-30x slower). The run's devices form a one-axis mesh, ``data``, over ``config.num_devices``
local devices; None means :func:`default_count`: all of them on the CPU, one on a GPU or TPU (a
batch-32 step split over 8 GPUs waits on an all-reduce per step and runs slower than on one; ask
for more with ``num_devices``). Parameters, optimizer state and the in-memory dataset are replicated
on every device; each batch's rows are split across them (:func:`batch_sharding`), so the global
batch stays ``config.batch_size`` and the result equals one device's up to float rounding. Evaluation
batches are padded up to a multiple of the device count (:func:`padded`; padding is masked), so any
``eval_batch_size`` works on any count. One device is the same program on a one-device mesh. The run
records the mesh as ``{"data": N}``. Seeds trained together are placed by :func:`seeds_layout`.

Many hosts: :func:`start_distributed` joins the processes (``config.distributed`` or a cluster's
environment) before anything else; the mesh then spans every process's devices, each process
computes its devices' share of every batch from its own copy of the data, and only process 0
(:func:`is_writer`) writes the run's files (all of them take part in saving checkpoints).
"""

from collections.abc import Iterator, Mapping, Sequence
import contextlib
import threading
from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
import numpy as np

from convnet import runtime
from convnet.errors import ConfigError

DATA_AXIS = "data"
PLATFORM_ALIASES = {"cuda": "gpu", "rocm": "gpu", "gpu": "gpu", "tpu": "tpu", "cpu": "cpu"}


def _jax_reason() -> str:
  """Why JAX did not start an accelerator backend, as JAX recorded it (its own log says more)."""
  try:
    from jax._src import xla_bridge  # no public query; absent in some future jax: no reason given

    errors = dict(getattr(xla_bridge, "_backend_errors", {}) or {})
  except ImportError:
    errors = {}
  reasons = [f"{name}: {str(error).splitlines()[0][:160]}" for name, error in errors.items() if name != "cpu"]
  return "; ".join(reasons) or "JAX's warning above says why"


def check_backend(requested: str | None) -> str:
  """JAX's backend; ConfigError if it is not the platform ``requested`` (e.g. a CPU run when a GPU was
  asked for), or if nothing was asked for and JAX fell back to the CPU on a host with an accelerator."""
  platform = runtime.requested_platform(requested)
  wanted = PLATFORM_ALIASES.get(platform or "", platform)
  if platform is not None and wanted not in PLATFORM_ALIASES.values():
    raise ConfigError(f"backend={platform!r} is not allowed; use 'cpu', 'gpu' or 'tpu' (or None: JAX's default)")
  install = 'install the jax for it (docs/devices.md: pip install -e ".[cuda]" or ".[tpu]")'
  try:
    backend = jax.default_backend()
  except (RuntimeError, AssertionError) as e:  # JAX_PLATFORMS names a platform this machine cannot start
    reason = str(e).splitlines()[0][:200] if str(e).strip() else f"no {wanted or platform} device is visible"
    raise ConfigError(
      f"backend {wanted or platform!r} was asked for (config.backend or JAX_PLATFORMS) but JAX cannot start it "
      f"({reason}); {install}"
    ) from None
  if wanted is not None and backend != wanted:
    raise ConfigError(
      f"backend {wanted!r} was asked for (config.backend or JAX_PLATFORMS) but JAX runs on {backend!r} "
      f"({jax.devices()[0].device_kind}); {install}"
    )
  if wanted is None and backend == "cpu":
    present = runtime.accelerator_present()
    if present is not None:
      raise ConfigError(
        f"JAX fell back to the CPU although {present} ({_jax_reason()}); fix the accelerator's driver or jax "
        "build (docs/devices.md), or run on the CPU on purpose: --config.backend=cpu"
      )
  return backend


def default_count(platform: str, available: int) -> int:
  """How many local devices a run uses when ``num_devices`` is None: all on the CPU (forced host devices
  share its cores), one on a GPU or TPU (see the module docstring)."""
  return available if platform == "cpu" else 1


def padded(size: int, count: int) -> int:
  """``size`` rounded up to a multiple of ``count`` (an evaluation batch that splits over the devices)."""
  return -(-size // count) * count


def seeds_layout(num_seeds: int, available: int) -> tuple[int, int]:
  """(devices, slots) for ``num_seeds`` models trained together on up to ``available`` devices: the
  fewest seeds per device, then the least padding. Slots beyond ``num_seeds`` train copies of the last
  seed, whose results are dropped: 3 seeds on 2 devices take 4 slots, 3 on 8 take 3 devices, 5 on 4
  take 3 devices and 6 slots."""
  best = min(range(1, min(num_seeds, available) + 1), key=lambda d: (-(-num_seeds // d), padded(num_seeds, d), -d))
  return best, padded(num_seeds, best)


_assigned = threading.local()  # the devices this thread's runs may use (the local executor's side-by-side trials)


@contextlib.contextmanager
def assigned(devices: Sequence[jax.Device]) -> Iterator[None]:
  """Within the block, runs started by this thread see only ``devices`` (and compute there by default):
  how the local executor trains several trials side by side, each on its own devices."""
  previous = getattr(_assigned, "devices", None)
  _assigned.devices = list(devices)
  try:
    with jax.default_device(devices[0]):
      yield
  finally:
    _assigned.devices = previous


def available_devices() -> list[jax.Device]:
  """The devices a run may use: this thread's assigned ones, else this process's (all processes' when many)."""
  mine = getattr(_assigned, "devices", None)
  if mine is not None:
    return list(mine)
  return jax.local_devices() if jax.process_count() == 1 else jax.devices()


def make_mesh(num_devices: int | None, axis: str = DATA_AXIS) -> Mesh:
  """A one-axis mesh over ``num_devices`` of this process's devices (None: :func:`default_count`; a run
  of many processes spans all of their devices)."""
  available = available_devices()
  if num_devices is None:
    num_devices = len(available) if jax.process_count() > 1 else default_count(available[0].platform, len(available))
  if isinstance(num_devices, bool) or not isinstance(num_devices, int) or not 1 <= num_devices <= len(available):
    raise ConfigError(
      f"num_devices={num_devices!r} is not allowed; this machine has {len(available)} "
      f"{available[0].platform} device(s): use 1..{len(available)} or None (all)"
    )
  return Mesh(available[:num_devices], (axis,))


def check_divisible(mesh: Mesh, sizes: Mapping[str, int]) -> None:
  """ConfigError naming the first size (e.g. ``batch_size``) that the mesh's devices do not divide."""
  count = mesh.devices.size
  for name, size in sizes.items():
    if size % count:
      raise ConfigError(
        f"{name}={size} does not split over {count} devices; use a multiple of {count} (or --config.num_devices=1)"
      )


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """For (steps, batch) index and mask arrays: each device takes its share of every batch's rows."""
  return NamedSharding(mesh, PartitionSpec(None, mesh.axis_names[0]))


def leading_sharding(mesh: Mesh) -> NamedSharding:
  """Arrays split along their first axis (the seeds of a SeedsProgram)."""
  return NamedSharding(mesh, PartitionSpec(mesh.axis_names[0]))


def put(tree: Any, sharding: NamedSharding) -> Any:
  """``tree`` placed with ``sharding``. Across processes, arrays go through the host (every process
  holds the same values: the same seed, the same data), since one process cannot move its own device
  arrays onto another's devices."""
  if jax.process_count() > 1:
    tree = jax.tree_util.tree_map(
      lambda x: x if getattr(x, "sharding", None) == sharding else np.asarray(jax.device_get(x)), tree
    )
  return jax.device_put(tree, sharding)


def describe(mesh: Mesh) -> dict[str, int]:
  """The mesh as the run records it: ``{"data": 2}``."""
  return {name: int(size) for name, size in mesh.shape.items()}


def placement(mesh: Mesh) -> dict[str, Any]:
  """Where a run computed, as its records say: the device kind, the ids of its devices, and the mesh."""
  first = mesh.devices.flat[0]
  return {"device": f"{first.platform}:{first.device_kind}", "device_ids": [int(d.id) for d in mesh.devices.flat],
          "mesh": describe(mesh)}  # fmt: skip


def first_local(mesh: Mesh) -> jax.Device:
  """The mesh's first device that this process can address (a run over many processes spans others)."""
  return next(d for d in mesh.devices.flat if d.process_index == jax.process_index())


def cluster_requested(config: Mapping[str, Any]) -> bool:
  """Whether this run is one process of many: ``config.distributed``, or a cluster's environment that
  ``jax.distributed.initialize()`` reads (a coordinator address, Slurm or Open MPI with several tasks)."""
  import os

  tasks = max(int(os.environ.get(name, "1") or 1) for name in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"))
  return bool(config.get("distributed")) or "JAX_COORDINATOR_ADDRESS" in os.environ or tasks > 1


def start_distributed(config: Mapping[str, Any]) -> bool:
  """``jax.distributed.initialize()`` when the run is one process of many (before anything starts the backend).

  The coordinator comes from JAX_COORDINATOR_ADDRESS or the cluster's environment (Slurm, Open MPI,
  Kubernetes, Cloud TPU); JAX_NUM_PROCESSES and JAX_PROCESS_ID give the rest where no cluster does.
  Returns whether it started; ConfigError (one line) if the cluster cannot be joined.
  """
  import os

  if not cluster_requested(config):
    return False
  kwargs = {}
  if "JAX_NUM_PROCESSES" in os.environ:
    kwargs = {"num_processes": int(os.environ["JAX_NUM_PROCESSES"]), "process_id": int(os.environ["JAX_PROCESS_ID"])}
  jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU devices across processes; GPUs use NCCL
  try:
    jax.distributed.initialize(**kwargs)
  except (RuntimeError, ValueError, KeyError) as e:
    raise ConfigError(f"cannot join the cluster: {str(e).splitlines()[0][:300]} (set JAX_COORDINATOR_ADDRESS, "
                      "JAX_NUM_PROCESSES and JAX_PROCESS_ID, or run under Slurm/MPI)") from None  # fmt: skip
  return True


def is_writer() -> bool:
  """Whether this process writes the run's files: the only one, or process 0 of many."""
  return jax.process_index() == 0
