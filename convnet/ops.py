"""Convolution and max pooling with gradients that stay on XLA:CPU's fast paths.

Both functions compute exactly what ``lax.conv_general_dilated`` and a 'VALID' max pool compute;
only their backward passes are written by hand (../shared/PERFORMANCE_NOTES.md, items 1 and 3):

* :func:`conv2d`: autodiff emits the two gradient convolutions with non-canonical dimension orders,
  and XLA:CPU only canonicalises the entry computation, so inside a ``lax.scan`` (our whole-epoch
  loop) they fall back to a naive kernel, ~250 ms per step. Here both gradients are written as
  NHWC/HWIO/NHWC convolutions with explicit transposes, which Eigen runs at full speed anywhere.
* :func:`max_pool`: ``lax.reduce_window``'s gradient is a ``select_and_scatter`` that XLA:CPU runs
  as a serial scalar loop. Here the pool is a reshape-and-max, and the gradient goes to the first
  maximum of each window in row-major order, as TensorFlow does (Fashion-MNIST's blank backgrounds
  make exact ties common; JAX's default would split the gradient among the tied inputs).

The same functions serve the model, the walkthrough and the layer-activation views.
"""

from collections.abc import Sequence
import functools

import jax
from jax import lax
import jax.numpy as jnp

Padding = str | Sequence[tuple[int, int]]
_DIMENSIONS = ("NHWC", "HWIO", "NHWC")


def _conv(x: jax.Array, kernel: jax.Array, padding) -> jax.Array:
  return lax.conv_general_dilated(x, kernel, window_strides=(1, 1), padding=padding, dimension_numbers=_DIMENSIONS)


def explicit_padding(padding: Padding, kernel_hw: tuple[int, int]) -> tuple[tuple[int, int], ...]:
  """'VALID' / 'SAME' / explicit pairs -> ((top, bottom), (left, right)) for a stride-1 conv."""
  if isinstance(padding, str):
    name = padding.upper()
    if name == "VALID":
      return ((0, 0), (0, 0))
    if name == "SAME":
      return tuple(((k - 1) // 2, k - 1 - (k - 1) // 2) for k in kernel_hw)
    raise ValueError(f"padding={padding!r} is not allowed; use 'VALID', 'SAME' or explicit pairs")
  pairs = tuple((int(lo), int(hi)) for lo, hi in padding)
  if len(pairs) != 2 or any(p < 0 for pair in pairs for p in pair):
    raise ValueError(f"padding={padding!r} must be two non-negative (low, high) pairs")
  return pairs


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv2d(x, kernel, padding):
  return _conv(x, kernel, padding)


def _conv2d_fwd(x, kernel, padding):
  return _conv(x, kernel, padding), (x, kernel)


def _conv2d_bwd(padding, residuals, grad_out):
  x, kernel = residuals
  kernel_h, kernel_w = kernel.shape[:2]
  # Input gradient: a 'full' correlation of the output gradient with the spatially flipped kernel
  # whose in/out channels are swapped; padding k-1-p on each side restores the input size.
  flipped = jnp.flip(kernel, axis=(0, 1)).transpose(0, 1, 3, 2)
  input_pad = tuple((k - 1 - lo, k - 1 - hi) for k, (lo, hi) in zip((kernel_h, kernel_w), padding, strict=True))
  grad_x = _conv(grad_out, flipped, input_pad)
  # Kernel gradient: the batch becomes the contraction ("feature") axis. Input channels play the
  # batch, the output gradient plays an (Ho, Wo, N, Cout) kernel; the result is (Cin, kh, kw, Cout).
  x_padded = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
  grad_kernel = _conv(x_padded.transpose(3, 1, 2, 0), grad_out.transpose(1, 2, 0, 3), "VALID")
  return grad_x, grad_kernel.transpose(1, 2, 0, 3)


_conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)


def conv2d(x: jax.Array, kernel: jax.Array, padding: Padding = "VALID") -> jax.Array:
  """Stride-1 2-D convolution (cross-correlation, as in every DL framework), NHWC x HWIO -> NHWC."""
  if x.ndim != 4 or kernel.ndim != 4 or x.shape[-1] != kernel.shape[2]:
    raise ValueError(f"conv2d needs x (N, H, W, C) and kernel (kh, kw, C, F); got {x.shape} and {kernel.shape}")
  return _conv2d(x, kernel, explicit_padding(padding, kernel.shape[:2]))


def _windows(x, size):
  n, h, w, c = x.shape
  out_h, out_w = h // size, w // size
  cropped = x[:, : out_h * size, : out_w * size, :]
  return cropped.reshape(n, out_h, size, out_w, size, c)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _max_pool(x, size):
  return _windows(x, size).max(axis=(2, 4))


def _max_pool_fwd(x, size):
  pooled = _windows(x, size).max(axis=(2, 4))
  return pooled, (x, pooled)


def _max_pool_bwd(size, residuals, grad_out):
  x, pooled = residuals
  windows = _windows(x, size)
  taken = jnp.zeros(pooled.shape, bool)
  rows = []
  for i in range(size):
    row = []
    for j in range(size):
      is_max = windows[:, :, i, :, j, :] == pooled
      first = is_max & ~taken  # an earlier position in the window already took the gradient
      taken = taken | is_max
      row.append(jnp.where(first, grad_out, jnp.zeros_like(grad_out)))
    rows.append(jnp.stack(row, axis=3))
  n, h, w, c = x.shape
  grad = jnp.stack(rows, axis=2).reshape(n, pooled.shape[1] * size, pooled.shape[2] * size, c)
  # Rows/columns that the floor division left out of every window get no gradient.
  grad = jnp.pad(grad, ((0, 0), (0, h - grad.shape[1]), (0, w - grad.shape[2]), (0, 0)))
  return (grad,)


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


def max_pool(x: jax.Array, size: int = 2) -> jax.Array:
  """Non-overlapping size x size max pooling of NHWC maps; trailing rows/columns are dropped (VALID)."""
  if x.ndim != 4:
    raise ValueError(f"max_pool needs x of shape (N, H, W, C); got {x.shape}")
  if size < 1 or x.shape[1] < size or x.shape[2] < size:
    raise ValueError(f"max_pool size {size} does not fit a {x.shape[1]}x{x.shape[2]} map")
  if size == 1:
    return x
  return _max_pool(x, size)
