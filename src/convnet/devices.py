"""The devices a run uses: the backend check, the data-parallel mesh, and where arrays live on it.

Decided once, at run start (``train_and_evaluate``): the backend must be the one asked for
(``config.backend`` or ``JAX_PLATFORMS``; a CPU run when an accelerator was asked for is an error,
not a silent fallback), and the run's devices form a one-axis mesh, ``data``, over
``config.num_devices`` local devices (None: all). Parameters, optimizer state and the in-memory
dataset are replicated on every device; each batch's rows are split across them (:func:`batch_sharding`),
so the global batch stays ``config.batch_size`` and the result equals one device's up to float
rounding. One device is the same program on a one-device mesh. The run records the mesh as
``{"data": N}``.

Many hosts: :func:`start_distributed` joins the processes (``config.distributed`` or a cluster's
environment) before anything else; the mesh then spans every process's devices, each process
computes its devices' share of every batch from its own copy of the data, and only process 0
(:func:`is_writer`) writes the run's files (all of them take part in saving checkpoints).
"""

from collections.abc import Mapping
from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
import numpy as np

from convnet import runtime
from convnet.errors import ConfigError

DATA_AXIS = "data"
PLATFORM_ALIASES = {"cuda": "gpu", "rocm": "gpu", "gpu": "gpu", "tpu": "tpu", "cpu": "cpu"}


def check_backend(requested: str | None) -> str:
  """JAX's backend; ConfigError if it is not the platform ``requested`` (e.g. a CPU run when a GPU was asked for)."""
  platform = runtime.requested_platform(requested)
  try:
    backend = jax.default_backend()
  except RuntimeError as e:  # JAX_PLATFORMS names a platform this machine cannot start
    raise ConfigError(f"JAX cannot start the backend asked for ({str(e).splitlines()[0][:200]})") from None
  wanted = PLATFORM_ALIASES.get(platform or "", platform)
  if platform is not None and wanted not in PLATFORM_ALIASES.values():
    raise ConfigError(f"backend={platform!r} is not allowed; use 'cpu', 'gpu' or 'tpu' (or None: JAX's default)")
  if wanted is not None and backend != wanted:
    raise ConfigError(
      f"backend {wanted!r} was asked for (config.backend or JAX_PLATFORMS) but JAX runs on {backend!r} "
      f'({jax.devices()[0].device_kind}); install the jax for it (pip install -e ".[cuda]" or ".[tpu]")'
    )
  return backend


def make_mesh(num_devices: int | None, axis: str = DATA_AXIS) -> Mesh:
  """A one-axis mesh over ``num_devices`` of this process's devices (None: all of them)."""
  available = jax.local_devices() if jax.process_count() == 1 else jax.devices()
  if num_devices is None:
    num_devices = len(available)
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
