"""Convolution and max pooling with gradients that stay on XLA:CPU's fast paths.

Both functions compute exactly what ``lax.conv_general_dilated`` and a 'VALID' max pool compute;
only their backward passes are written by hand, to avoid two XLA:CPU slow paths (measured with
``python -m convnet.benchmark --mode=xla``; experiments/benchmarks/README.md, "What the speed rests on"):

* :func:`conv2d`: autodiff emits the two gradient convolutions with non-canonical dimension orders,
  and XLA:CPU only canonicalises the entry computation, so inside a ``lax.scan`` (our whole-epoch
  loop) they fall back to a naive kernel: ~180 ms per step for the seed's second conv, against
  ~4 ms here. Here the kernel gradient is an NHWC/HWIO/NHWC convolution with explicit transposes,
  which Eigen runs at full speed anywhere, and the input gradient a GEMM plus col2im (no FLOPs
  spent on zero padding).
* :func:`max_pool`: ``lax.reduce_window``'s gradient is a ``select_and_scatter`` that XLA:CPU runs
  as a serial scalar loop. Here the pool is a reshape-and-max, and the gradient goes to the first
  maximum of each window in row-major order, as TensorFlow does (Fashion-MNIST's blank backgrounds
  make exact ties common; JAX's default would split the gradient among the tied inputs).

* :func:`conv_relu_pool`: the whole conv -> ReLU -> max pool block in one op, for layers with few
  input channels (the first layer of a grayscale network), where the full-resolution conv output is
  the step's largest tensor and Eigen's 1-channel convolution runs far below the machine's peak.

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
  # Input gradient as a GEMM and a col2im: each output position's gradient times the kernel gives the
  # gradient of its whole input patch, (N, Ho, Wo, kh, kw, C); shifting the kh*kw slices back into
  # place and adding them is one elementwise pass. The equivalent 'full' correlation (flipped kernel,
  # k-1 padding) multiplies the zero padding too: 44% more FLOPs for a 3x3 kernel on a 10x10 map.
  patch_grads = lax.dot_general(grad_out, kernel, (((3,), (3,)), ((), ())))
  grad_padded = None
  for dh in range(kernel_h):
    for dw in range(kernel_w):
      part = jnp.pad(
        patch_grads[:, :, :, dh, dw, :], ((0, 0), (dh, kernel_h - 1 - dh), (dw, kernel_w - 1 - dw), (0, 0))
      )
      grad_padded = part if grad_padded is None else grad_padded + part
  (top, _), (left, _) = padding
  grad_x = grad_padded[:, top : top + x.shape[1], left : left + x.shape[2], :]
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


def _unpool(parts):
  """Per-window-position maps ``parts[i][j]`` (N, h, w, C) -> the full-resolution (N, s*h, s*w, C) map
  that holds ``parts[i][j]`` at position (i, j) of every s x s window."""
  size = len(parts)
  n, h, w, c = parts[0][0].shape
  rows = [jnp.stack(row, axis=3) for row in parts]  # each (N, h, w, s, C)
  return jnp.stack(rows, axis=2).reshape(n, h * size, w * size, c)


def _max_pool_bwd(size, residuals, grad_out):
  x, pooled = residuals
  windows = _windows(x, size)
  taken = jnp.zeros(pooled.shape, bool)
  parts = []
  for i in range(size):
    row = []
    for j in range(size):
      is_max = windows[:, :, i, :, j, :] == pooled
      first = is_max & ~taken  # an earlier position in the window already took the gradient
      taken = taken | is_max
      row.append(jnp.where(first, grad_out, jnp.zeros_like(grad_out)))
    parts.append(row)
  grad = _unpool(parts)
  # Rows/columns that the floor division left out of every window get no gradient.
  h, w = x.shape[1:3]
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


# --- a conv block for few input channels: conv + bias -> ReLU -> max pool in one op ----------------


def _strided(x, row, col, size, out_h, out_w):
  """x[:, row + size*i, col + size*j, :] for i < out_h, j < out_w."""
  return x[:, row : row + size * (out_h - 1) + 1 : size, col : col + size * (out_w - 1) + 1 : size, :]


def _window_maps(x, kernel, bias, size, out_h, out_w):
  """conv(x, kernel) + bias at each position of the pool windows: size*size maps of the pooled shape,
  row-major window positions, each written out tap by tap (kh*kw*C multiply-adds per value)."""
  kernel_h, kernel_w, channels, _ = kernel.shape
  maps = []
  for a in range(size):
    for b in range(size):
      acc = bias.reshape(1, 1, 1, -1)
      for dh in range(kernel_h):
        for dw in range(kernel_w):
          xs = _strided(x, a + dh, b + dw, size, out_h, out_w)
          for c in range(channels):
            acc = acc + xs[..., c : c + 1] * kernel[dh, dw, c].reshape(1, 1, 1, -1)
      maps.append(acc)
  return maps


def _pooled_shape(x, kernel, size):
  return (x.shape[1] - kernel.shape[0] + 1) // size, (x.shape[2] - kernel.shape[1] + 1) // size


def _stored(best, index):
  """``(best, index)`` unchanged, but computed once and kept in memory.

  Both are elementwise in ``x``, and XLA fuses elementwise producers into every consumer: left
  alone, the next conv's input, its weight gradient and this op's backward pass would each redo
  all the multiply-adds, which left the fused op no faster than the separate ones. XLA:CPU drops
  ``lax.optimization_barrier`` before fusion, but it never fuses a reduction into its consumers. So
  the maps go through a reduction over a 2-row stack whose second row can never be picked (the
  reducer keeps the row with the smaller index, and that row's index is larger than any position).
  """
  pad = jnp.iinfo(jnp.int8).max

  def keep_first(a, b):
    (value_a, index_a), (value_b, index_b) = a, b
    take_b = index_b < index_a
    return lax.select(take_b, value_b, value_a), lax.select(take_b, index_b, index_a)

  values = jnp.stack([best, jnp.zeros_like(best)])
  indices = jnp.stack([index, jnp.full_like(index, pad)])
  return lax.reduce((values, indices), (jnp.zeros((), best.dtype), jnp.array(pad, jnp.int8)), keep_first, (0,))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _conv_relu_pool(x, kernel, bias, size):
  return _conv_relu_pool_fwd(x, kernel, bias, size)[0]


def _conv_relu_pool_fwd(x, kernel, bias, size):
  maps = _window_maps(x, kernel, bias, size, *_pooled_shape(x, kernel, size))
  best, index = maps[0], jnp.zeros(maps[0].shape, jnp.int8)
  for k, m in enumerate(maps[1:], start=1):
    better = m > best  # strict: a tie keeps the earlier position, as max_pool's gradient does
    best, index = jnp.where(better, m, best), jnp.where(better, jnp.int8(k), index)
  best, index = _stored(best, index)
  out = jnp.maximum(best, 0)
  return out, (x, kernel, out, index)


def _conv_relu_pool_bwd(size, residuals, grad_out):
  x, kernel, out, index = residuals
  kernel_h, kernel_w = kernel.shape[:2]
  grad = jnp.where(out > 0, grad_out, jnp.zeros_like(grad_out))
  # The conv-output gradient: each window's gradient at its first maximum, the windows interleaved
  # back to (N, size*out_h, size*out_w, F) as max_pool's gradient does; then conv2d's gradients on
  # the input rows/columns that the windows cover (the rest get none).
  zero = jnp.zeros_like(grad)
  grad_conv = _unpool([[jnp.where(index == a * size + b, grad, zero) for b in range(size)] for a in range(size)])
  out_h, out_w = grad.shape[1:3]
  covered = x[:, : out_h * size + kernel_h - 1, : out_w * size + kernel_w - 1, :]
  grad_x, grad_kernel = _conv2d_bwd(((0, 0), (0, 0)), (covered, kernel), grad_conv)
  grad_x = jnp.pad(grad_x, ((0, 0), (0, x.shape[1] - covered.shape[1]), (0, x.shape[2] - covered.shape[2]), (0, 0)))
  return grad_x, grad_kernel, jnp.sum(grad, axis=(0, 1, 2))


_conv_relu_pool.defvjp(_conv_relu_pool_fwd, _conv_relu_pool_bwd)


def conv_relu_pool(
  x: jax.Array, kernel: jax.Array, bias: jax.Array, size: int, padding: Padding = "VALID"
) -> jax.Array:
  """``max_pool(relu(conv2d(x, kernel, padding) + bias), size)``, without the full-resolution map.

  Each pooled value is the maximum of its window's conv outputs, written out tap by tap, so the
  conv output is never stored: the forward pass keeps the pooled map and each window's first
  maximum position (int8), and only the conv outputs that some window covers are computed (as with
  ``crop_to_pool``). Values and gradients equal those of the three separate ops, ties included.
  The cost grows with ``kh*kw*C`` per value: meant for few input channels; ``conv2d`` for many.
  """
  if x.ndim != 4 or kernel.ndim != 4 or x.shape[-1] != kernel.shape[2] or bias.shape != kernel.shape[-1:]:
    raise ValueError(
      f"conv_relu_pool needs x (N, H, W, C), kernel (kh, kw, C, F) and bias (F,); "
      f"got {x.shape}, {kernel.shape} and {bias.shape}"
    )
  (top, bottom), (left, right) = explicit_padding(padding, kernel.shape[:2])
  x = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
  out_h, out_w = _pooled_shape(x, kernel, max(size, 1))
  if size < 1 or out_h < 1 or out_w < 1:
    raise ValueError(
      f"conv_relu_pool: a {size}x{size} pool does not fit the conv output of {x.shape} and {kernel.shape}"
    )
  if size * size > jnp.iinfo(jnp.int8).max:
    raise ValueError(f"conv_relu_pool: pool size {size} is too large (at most 11)")
  return _conv_relu_pool(x, kernel, bias, size)
