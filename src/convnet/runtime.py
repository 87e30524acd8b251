"""XLA:CPU flags that must be in place before JAX starts its backend, set only where they serve.

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
import sys

CPU_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",)
FLAGS_KNOWN_IN = ("0.10.",)  # jaxlib versions known to have CPU_FLAGS (others: looked up in the library)
ACCELERATOR_PLUGINS = ("jax_cuda13_plugin", "jax_cuda12_plugin", "jax_rocm7_plugin", "jax_rocm60_plugin", "libtpu")


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
  if version.startswith(FLAGS_KNOWN_IN):
    return True
  spec = importlib.util.find_spec("jaxlib")
  name = flag.lstrip("-").split("=")[0].encode()
  for library in Path(spec.origin).parent.glob("*.so") if spec and spec.origin else ():
    with open(library, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
      if data.find(name) >= 0:
        return True
  return False


def configure_xla(backend: str | None = None) -> bool:
  """Adds the CPU flags to XLA_FLAGS where they serve (see the module docstring); False if none was added."""
  if os.environ.get("CONVNET_NO_XLA_FLAGS") or backend_started() or not expects_cpu(backend):
    return False
  flags = os.environ.get("XLA_FLAGS", "").split()
  added = False
  for flag in CPU_FLAGS:
    name = flag.split("=")[0]
    if not any(f.split("=")[0] == name for f in flags) and jaxlib_knows(flag):
      flags.append(flag)
      added = True
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
