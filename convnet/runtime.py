"""XLA:CPU flags that must be in place before jax is imported.

jaxlib 0.10.2 sends CPU convolutions to its YNNPACK backend, about 2x slower on the project's
machines than XLA's Eigen convolutions (../shared/PERFORMANCE_NOTES.md, item 2). The flag below
sends convolutions back to Eigen while keeping YNNPACK's fast dot products. XLA reads XLA_FLAGS
once, when the backend starts, so entry points call :func:`configure_xla` before importing jax.
This module imports nothing from jax.
"""

import os
import sys

CPU_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",)


def configure_xla() -> bool:
  """Adds the CPU flags to XLA_FLAGS; returns False (and changes nothing) if jax is already imported."""
  if "jax" in sys.modules:
    return False
  if os.environ.get("CONVNET_NO_XLA_FLAGS"):
    return False
  flags = os.environ.get("XLA_FLAGS", "").split()
  for flag in CPU_FLAGS:
    name = flag.split("=")[0]
    if not any(f.split("=")[0] == name for f in flags):
      flags.append(flag)
  os.environ["XLA_FLAGS"] = " ".join(flags)
  return True
