"""Numerics a run can name: the precision of its matmuls and convolutions, and reproducible GPU kernels.

``config.matmul_precision`` (:data:`MATMUL_PRECISIONS`) is applied while a program is traced
(:func:`matmul_precision`); ``config.deterministic`` is an XLA flag set before JAX starts
(``convnet.runtime.configure_xla``). Every run records both (:func:`record`).
"""

from collections.abc import Mapping
import contextlib
from typing import Any

import jax

from convnet import runtime

MATMUL_PRECISIONS = ("float32", "tensorfloat32", "bfloat16", "default")


def matmul_precision(config: Mapping[str, Any]) -> contextlib.AbstractContextManager:
  """``config.matmul_precision`` for the programs traced in the block (JAX's ``default_matmul_precision``).

  'float32' (the default) computes matmuls and convolutions in full float32 on every backend, so that
  a GPU or TPU run agrees with the CPU to float32 rounding; 'tensorfloat32' and 'bfloat16' are the
  faster one-pass modes of NVIDIA GPUs and TPUs (the CPU computes float32 whatever is asked);
  'default' is JAX's own choice per backend (TF32 on recent NVIDIA GPUs, one bfloat16 pass on TPU).
  Every run records it (``summary.json``, the sweep's result lines).
  """
  name = config.get("matmul_precision") or "float32"
  if name == "default" or jax.default_backend() == "cpu":  # the CPU's programs stay as they were measured
    return contextlib.nullcontext()
  return jax.default_matmul_precision(name)


def record(config: Mapping[str, Any]) -> dict[str, Any]:
  """How a run computes, as its records say: the matmul precision in force (the CPU computes float32
  whatever is asked) and whether XLA's deterministic GPU ops were on (``runtime.configure_xla``)."""
  asked = config.get("matmul_precision") or "float32"
  return {
    "matmul_precision": "float32" if jax.default_backend() == "cpu" else asked,
    "deterministic": runtime.deterministic_in_force(),
  }
