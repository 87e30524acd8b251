"""XLA:CPU flags that must be in place before JAX starts its backend.

jaxlib 0.10.2 sends CPU convolutions to its YNNPACK backend, about 2x slower on the project's
machines than XLA's Eigen convolutions (measured: experiments/benchmarks/README.md, "What the speed
rests on"). The flag below sends convolutions back to Eigen while keeping YNNPACK's fast dot
products. XLA reads XLA_FLAGS once, when the backend starts (at the first computation or device
query, not at ``import jax``), so every entry point calls :func:`configure_xla` first, through
``convnet.cli.run``; in a notebook, call it before the first computation.
"""

import os
import sys

CPU_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",)


def backend_started() -> bool:
  """Whether JAX has started a backend in this process (then XLA_FLAGS changes come too late)."""
  if "jax" not in sys.modules:
    return False
  try:
    from jax._src import xla_bridge  # no public query exists; absent in some future jax: assume started

    return bool(xla_bridge.backends_are_initialized())
  except (ImportError, AttributeError):
    return True


def configure_xla() -> bool:
  """Adds the CPU flags to XLA_FLAGS, keeping any the user set; False (changing nothing) if too late."""
  if os.environ.get("CONVNET_NO_XLA_FLAGS") or backend_started():
    return False
  flags = os.environ.get("XLA_FLAGS", "").split()
  for flag in CPU_FLAGS:
    name = flag.split("=")[0]
    if not any(f.split("=")[0] == name for f in flags):
      flags.append(flag)
  os.environ["XLA_FLAGS"] = " ".join(flags)
  return True
