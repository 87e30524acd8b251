"""The hand-written gradients of convnet.ops equal autodiff; pooling keeps TF's first-maximum rule;
the fused conv+ReLU+pool block equals the three separate ops. Gradients are compared jitted, as training
runs them (op by op, each primitive would compile on its own: several times slower)."""

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

from convnet import ops


def reference_conv(x, kernel, padding):
  pads = ops.explicit_padding(padding, kernel.shape[:2])
  return lax.conv_general_dilated(x, kernel, (1, 1), pads, dimension_numbers=("NHWC", "HWIO", "NHWC"))


@pytest.mark.parametrize("padding", ["VALID", "SAME", ((1, 2), (0, 1))])
@pytest.mark.parametrize("kernel_hw", [(3, 3), (5, 5), (2, 3), (1, 1)])
def test_conv2d_value_and_gradients_match_autodiff(padding, kernel_hw):
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 9, 10, 4))
  kernel = jax.random.normal(jax.random.PRNGKey(1), (*kernel_hw, 4, 5))
  np.testing.assert_allclose(ops.conv2d(x, kernel, padding), reference_conv(x, kernel, padding), rtol=1e-5, atol=1e-5)

  def loss(conv):
    return lambda x, k: jnp.sum(jnp.sin(conv(x, k, padding)))

  expected = jax.jit(jax.grad(loss(reference_conv), argnums=(0, 1)))(x, kernel)
  got = jax.jit(jax.grad(loss(ops.conv2d), argnums=(0, 1)))(x, kernel)
  for e, g in zip(expected, got, strict=True):
    np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4)


def test_conv2d_gradient_inside_scan_matches_autodiff():
  # The reason the VJP exists: gradients inside lax.scan (the epoch loop) must still be right.
  xs = jax.random.normal(jax.random.PRNGKey(0), (4, 2, 13, 13, 8))
  kernel = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 8, 6))

  def train(conv):
    def step(k, x):
      g = jax.grad(lambda k: jnp.sum(jnp.tanh(conv(x, k, "VALID"))))(k)
      return k - 0.01 * g, None

    return lambda: lax.scan(step, kernel, xs)[0]

  np.testing.assert_allclose(jax.jit(train(ops.conv2d))(), jax.jit(train(reference_conv))(), rtol=1e-5, atol=1e-5)


def test_conv2d_is_a_cross_correlation_like_numpy():
  image = np.arange(30, dtype=np.float32).reshape(1, 5, 6, 1)
  kernel = np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], np.float32)
  expected = np.zeros((3, 4), np.float32)
  for i in range(3):
    for j in range(4):
      expected[i, j] = np.sum(image[0, i : i + 3, j : j + 3, 0] * kernel)
  got = ops.conv2d(jnp.asarray(image), jnp.asarray(kernel)[:, :, None, None])
  np.testing.assert_allclose(got[0, :, :, 0], expected)


@pytest.mark.parametrize("shape, size", [((2, 8, 8, 3), 2), ((2, 7, 9, 3), 2), ((1, 11, 11, 4), 3)])
def test_max_pool_matches_flax_pool_and_its_gradient(shape, size):
  x = jax.random.normal(jax.random.PRNGKey(0), shape)  # continuous values: no ties
  expected = nn.max_pool(x, (size, size), strides=(size, size))
  np.testing.assert_array_equal(ops.max_pool(x, size), expected)

  def loss(pool):
    return lambda x: jnp.sum(jnp.sin(pool(x)))

  reference = loss(lambda x: nn.max_pool(x, (size, size), strides=(size, size)))
  got = jax.jit(jax.grad(loss(lambda x: ops.max_pool(x, size))))(x)
  np.testing.assert_allclose(got, jax.jit(jax.grad(reference))(x), atol=1e-6)


def test_max_pool_picks_each_window_maximum():
  x = np.array([[1, 5, 2, 0], [3, 4, 8, 1], [0, 0, 7, 7], [9, 1, 7, 6]], np.float32)
  np.testing.assert_array_equal(ops.max_pool(jnp.asarray(x)[None, :, :, None], 2)[0, :, :, 0], [[5, 8], [9, 7]])


def test_max_pool_gradient_goes_to_the_first_maximum_only():
  # Window [[7, 7], [7, 6]] ties three ways: TF gives all of the gradient to the first (row-major).
  x = jnp.asarray(np.array([[0, 0, 7, 7], [0, 0, 7, 6]], np.float32))[None, :, :, None]
  grad = jax.grad(lambda x: jnp.sum(ops.max_pool(x, 2) * jnp.asarray([2.0, 3.0]).reshape(1, 1, 2, 1)))(x)
  np.testing.assert_array_equal(grad[0, :, :, 0], [[2, 0, 3, 0], [0, 0, 0, 0]])


def test_bad_shapes_are_refused():
  with pytest.raises(ValueError, match="does not fit"):
    ops.max_pool(jnp.zeros((1, 1, 1, 1)), 2)
  with pytest.raises(ValueError, match="conv2d needs"):
    ops.conv2d(jnp.zeros((1, 5, 5, 2)), jnp.zeros((3, 3, 1, 4)))
  with pytest.raises(ValueError, match="padding='FULL' is not allowed"):
    ops.conv2d(jnp.zeros((1, 5, 5, 1)), jnp.zeros((3, 3, 1, 4)), "FULL")


def separate_block(x, kernel, bias, size, padding):
  return ops.max_pool(jax.nn.relu(ops.conv2d(x, kernel, padding) + bias.reshape(1, 1, 1, -1)), size)


@pytest.mark.parametrize(
  "x_shape, kernel_shape, size, padding",
  [
    ((3, 28, 28, 1), (3, 3, 1, 8), 2, "VALID"),  # the seed's first layer
    ((2, 28, 28, 1), (5, 5, 1, 4), 2, "VALID"),
    ((2, 13, 11, 3), (5, 5, 3, 4), 3, "SAME"),  # windows leave rows/columns over
    ((2, 9, 10, 2), (3, 2, 2, 5), 1, ((1, 0), (2, 1))),
  ],
)
@pytest.mark.slow
def test_conv_relu_pool_equals_the_separate_ops_ties_included(x_shape, kernel_shape, size, padding):
  # Small integer inputs make exact ties in the pool windows (and exact zeros before the ReLU)
  # common, as Fashion-MNIST's blank backgrounds do: the gradient must go where max_pool sends it.
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.integers(0, 3, x_shape), jnp.float32)
  kernel = jnp.asarray(rng.integers(-2, 3, kernel_shape), jnp.float32)
  bias = jnp.asarray(rng.integers(-1, 2, kernel_shape[-1:]), jnp.float32)
  expected = separate_block(x, kernel, bias, size, padding)
  got = ops.conv_relu_pool(x, kernel, bias, size, padding)
  assert got.shape == expected.shape
  np.testing.assert_array_equal(got, expected)  # integer-valued sums: exact
  assert float(jnp.mean(got == 0)) > 0.1  # the ReLU did cut (the test would not see its gradient otherwise)
  weights = jnp.asarray(rng.normal(size=expected.shape), jnp.float32)

  def loss(block):
    return lambda *args: jnp.sum(block(*args, size, padding) * weights)

  want = jax.jit(jax.grad(loss(separate_block), argnums=(0, 1, 2)))(x, kernel, bias)
  have = jax.jit(jax.grad(loss(ops.conv_relu_pool), argnums=(0, 1, 2)))(x, kernel, bias)
  for name, e, g in zip(("x", "kernel", "bias"), want, have, strict=True):
    np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5, err_msg=name)


def test_conv_relu_pool_inside_a_jitted_scan_matches_the_separate_ops():
  xs = jax.random.uniform(jax.random.PRNGKey(0), (3, 4, 12, 12, 1))
  kernel = 0.5 * jax.random.normal(jax.random.PRNGKey(1), (3, 3, 1, 6))
  bias = jnp.full((6,), 0.05)

  def train(block):
    def step(params, x):
      grads = jax.grad(lambda p: jnp.sum(jnp.tanh(block(x, p[0], p[1], 2, "VALID"))))(params)
      return jax.tree_util.tree_map(lambda p, g: p - 0.1 * g, params, grads), None

    return lambda: lax.scan(step, (kernel, bias), xs)[0]

  for a, b in zip(jax.jit(train(ops.conv_relu_pool))(), jax.jit(train(separate_block))(), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_conv_relu_pool_refuses_bad_shapes():
  with pytest.raises(ValueError, match="conv_relu_pool needs"):
    ops.conv_relu_pool(jnp.zeros((1, 5, 5, 2)), jnp.zeros((3, 3, 1, 4)), jnp.zeros(4), 2)
  with pytest.raises(ValueError, match="pool does not fit"):
    ops.conv_relu_pool(jnp.zeros((1, 4, 4, 1)), jnp.zeros((3, 3, 1, 4)), jnp.zeros(4), 3)
  with pytest.raises(ValueError, match="too large"):
    ops.conv_relu_pool(jnp.zeros((1, 40, 40, 1)), jnp.zeros((3, 3, 1, 4)), jnp.zeros(4), 12)
