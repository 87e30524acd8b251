"""What must be in place before JAX starts its backend: the platform, device memory, XLA's flags.

:func:`configure_xla` is called by every entry point (``convnet.cli.run``), by Ray workers, spawned
benchmark workers and the tests, before anything starts JAX's backend; in a notebook, call it before
the first computation. It does four things, none over a setting the user made:

* **the platform**: ``config.backend`` ('cpu', 'gpu', 'tpu') becomes JAX's ``jax_platforms``, so that
  ``backend='cpu'`` runs on the CPU of a GPU host (``convnet.devices.check_backend`` then checks that
  the backend asked for is the one that started, and that a host with an accelerator did not fall
  back to the CPU unasked: :func:`accelerator_present`);
* **device memory**: ``XLA_PYTHON_CLIENT_PREALLOCATE=false``. JAX takes 75% of a GPU's memory at start
  by default; a sweep driver, benchmark workers, test subprocesses and Ray workers that share one GPU
  would each try. Child processes inherit the setting;
* **reproducible GPU kernels** when asked (``config.deterministic``): XLA's deterministic-ops flag
  (:data:`DETERMINISTIC_FLAGS`, the first one this jaxlib knows), at some speed cost. A run records
  whether it was in force (:func:`deterministic_in_force`);
* **the XLA:CPU flag**, described next.

jaxlib 0.10.2 sends CPU convolutions to its YNNPACK backend, about 2x slower on the project's
machines than XLA's Eigen convolutions (measured: experiments/benchmarks/README.md, "What the speed
rests on"). The flag below sends convolutions back to Eigen while keeping YNNPACK's fast dot
products. XLA reads XLA_FLAGS once, when the backend starts (at the first computation or device
query, not at ``import jax``), so every entry point calls :func:`configure_xla` first, through
``convnet.cli.run``; in a notebook, call it before the first computation.

The flag is added only when the run's backend will be the CPU (no accelerator asked for, by
``config.backend`` or ``JAX_PLATFORMS``, and none installed), only if this jaxlib knows it (XLA
aborts on an unknown flag), and never over a user's own setting of it.
"""

import contextlib
import importlib.metadata
import importlib.util
import mmap
import os
from pathlib import Path
import pkgutil
import sys

CPU_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",)
FLAGS_KNOWN_IN = ("0.10.",)  # jaxlib versions known to have CPU_FLAGS (others: looked up in the library)
ACCELERATOR_PLUGINS = ("jax_cuda13_plugin", "jax_cuda12_plugin", "jax_rocm7_plugin", "jax_rocm60_plugin", "libtpu")
PREALLOCATE = "XLA_PYTHON_CLIENT_PREALLOCATE"
# XLA's flag for run-to-run identical GPU results, by jaxlib generation (newest first); only a flag this
# jaxlib knows is set (XLA aborts on an unknown one).
DETERMINISTIC_FLAGS = ("--xla_gpu_exclude_nondeterministic_ops=true", "--xla_gpu_deterministic_ops=true")
NVIDIA_DEVICE_FILES = ("/dev/nvidia0", "/dev/nvidiactl", "/dev/dxg")  # the files JAX itself looks for
GOOGLE_PCI_VENDOR = "0x1ae0"  # TPU chips on the PCI bus (Google's other PCI devices, e.g. gVNIC, are not TPUs)
TPU_PCI_DEVICES = ("0x0027", "0x0056", "0x005e", "0x0062", "0x0063", "0x006f", "0x0076")  # v3 .. TPU7x


def backend_started() -> bool:
  """Whether JAX has started a backend in this process (then XLA_FLAGS changes come too late)."""
  if "jax" not in sys.modules:
    return False
  try:
    from jax._src import xla_bridge  # no public query exists; absent in some future jax: assume started

    return bool(xla_bridge.backends_are_initialized())
  except (ImportError, AttributeError):
    return True


def requested_platform(backend: str | None = None) -> str | None:
  """The platform asked for: ``backend`` (config.backend), else JAX_PLATFORMS' first entry, else None."""
  platform = backend or os.environ.get("JAX_PLATFORMS", "").split(",")[0].strip()
  return platform.lower() or None


def platform_name(backend: str) -> str:
  """``backend`` as JAX's ``jax_platforms`` takes it: 'gpu' is the GPU plugin installed ('cuda' or 'rocm');
  a list such as 'gpu,cpu' (the accelerator first, the CPU beside it) is mapped entry by entry."""
  rocm = any(importlib.util.find_spec(n) for n in ACCELERATOR_PLUGINS if n.startswith("jax_rocm"))
  names = [name.strip().lower() for name in backend.split(",") if name.strip()]
  return ",".join(("rocm" if rocm else "cuda") if name == "gpu" else name for name in names)


def select_platform(backend: str | None) -> bool:
  """Makes ``backend`` (config.backend) JAX's platform before its backend starts; False if nothing was set.

  JAX_PLATFORMS set by the user stays unless ``backend`` names another platform (the config is the
  more specific request); a backend that has started already cannot change (``check_backend`` then
  says so).
  """
  if not backend or backend_started():
    return False
  platform = platform_name(backend)
  os.environ["JAX_PLATFORMS"] = platform
  if "jax" in sys.modules:  # jax read JAX_PLATFORMS when it was imported
    import jax

    jax.config.update("jax_platforms", platform)
  return True


def plugins_installed() -> list[str]:
  """The accelerator plugins JAX would load: convnet's known names, ``jax_plugins.*`` modules and the
  ``jax_plugins`` entry points (found without importing them)."""
  found = [name for name in ACCELERATOR_PLUGINS if importlib.util.find_spec(name)]
  spec = importlib.util.find_spec("jax_plugins")
  if spec is not None and spec.submodule_search_locations:
    found += [f"jax_plugins.{m.name}" for m in pkgutil.iter_modules(spec.submodule_search_locations)]
  found += [entry.value for entry in importlib.metadata.entry_points(group="jax_plugins")]
  return list(dict.fromkeys(found))


def accelerator_present() -> str | None:
  """What shows that this host has an accelerator (plugins installed, NVIDIA device files, TPU chips on
  PCI), in words; None for a host with none. Reads files only: starts nothing."""
  plugins = plugins_installed()
  if plugins:
    return f"the accelerator plugin(s) {', '.join(plugins)} are installed"
  files = [path for path in NVIDIA_DEVICE_FILES if os.path.exists(path)]
  if files:
    return f"NVIDIA device files exist ({', '.join(files)})"
  for vendor in Path("/sys/bus/pci/devices").glob("*/vendor"):
    with contextlib.suppress(OSError):
      if (
        vendor.read_text().strip() == GOOGLE_PCI_VENDOR
        and (vendor.parent / "device").read_text().strip() in TPU_PCI_DEVICES
      ):
        return "TPU chips are on the PCI bus"
  return None


def deterministic_in_force() -> bool:
  """Whether XLA_FLAGS asks for deterministic GPU ops (``config.deterministic``, or the user's own flag)."""
  names = {flag.split("=")[0] for flag in DETERMINISTIC_FLAGS}
  return any(f.split("=")[0] in names and f.split("=", 1)[-1].lower() in ("true", "1") for f in
             os.environ.get("XLA_FLAGS", "").split())  # fmt: skip


def expects_cpu(backend: str | None = None) -> bool:
  """Whether the backend will be the CPU: asked for, or nothing else asked for and no accelerator plugin installed."""
  platform = requested_platform(backend)
  if platform is not None:
    return platform == "cpu"
  return not any(importlib.util.find_spec(name) for name in ACCELERATOR_PLUGINS)


def jaxlib_knows(flag: str) -> bool:
  """Whether the installed jaxlib defines ``flag`` (its name is in the XLA library), without starting it."""
  try:
    version = importlib.metadata.version("jaxlib")
  except importlib.metadata.PackageNotFoundError:
    return False
  if flag in CPU_FLAGS and version.startswith(FLAGS_KNOWN_IN):
    return True
  spec = importlib.util.find_spec("jaxlib")
  name = flag.lstrip("-").split("=")[0].encode()
  for library in Path(spec.origin).parent.glob("*.so") if spec and spec.origin else ():
    with open(library, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
      if data.find(name) >= 0:
        return True
  return False


def _add_flag(flags: list[str], flag: str) -> bool:
  name = flag.split("=")[0]
  if any(f.split("=")[0] == name for f in flags) or not jaxlib_knows(flag):
    return False
  flags.append(flag)
  return True


def configure_xla(backend: str | None = None, deterministic: bool = False) -> bool:
  """The platform, device memory, deterministic ops and the CPU flag, before JAX's backend starts (see
  the module docstring); True if the CPU flag was added. Does nothing once a backend has started."""
  if backend_started():
    return False
  os.environ.setdefault(PREALLOCATE, "false")
  select_platform(backend)
  flags = os.environ.get("XLA_FLAGS", "").split()
  if deterministic and not deterministic_in_force():
    any(_add_flag(flags, flag) for flag in DETERMINISTIC_FLAGS)
    os.environ["XLA_FLAGS"] = " ".join(flags)
  if os.environ.get("CONVNET_NO_XLA_FLAGS") or not expects_cpu(backend):
    return False
  added = False
  for flag in CPU_FLAGS:
    added = _add_flag(flags, flag) or added
  os.environ["XLA_FLAGS"] = " ".join(flags)
  return added


COMPILATION_CACHE_DIR = "jax_cache"  # under a sweep's directory


@contextlib.contextmanager
def compilation_cache(directory: str | os.PathLike):
  """JAX's persistent compilation cache in ``directory`` while the block runs (then as it was).

  A sweep enters a trial once per rung, resumes trials and repeats architectures over seeds: with
  the cache, XLA compiles each program once per sweep directory and later trials load it (every
  program is cached, however quick its compile). A cache directory the user set already
  (``JAX_COMPILATION_CACHE_DIR`` or ``jax.config``) is kept. Compilation time is outside the
  recorded epoch timings either way; ``compile_seconds`` shows the saving.
  """
  import jax
  from jax.experimental.compilation_cache import compilation_cache as jax_cache

  if jax.config.jax_compilation_cache_dir:
    yield
    return
  keys = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
  before = {key: getattr(jax.config, key) for key in keys}
  jax.config.update("jax_compilation_cache_dir", str(directory))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax_cache.reset_cache()  # the cache is set up at the next compile, in this directory
  try:
    yield
  finally:
    for key, value in before.items():
      jax.config.update(key, value)
    jax_cache.reset_cache()
