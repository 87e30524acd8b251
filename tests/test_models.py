"""The model: shapes, the pinned parameter count, shape checks, and the fast ops against nn.Conv
(gradients compared jitted, as training runs them: op by op they compile primitive by primitive)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from convnet import models
from convnet.errors import ConfigError

SEED = {
  "features": (64, 64),
  "kernel_size": 3,
  "padding": "VALID",
  "pool_size": 2,
  "dense_features": (128,),
  "num_classes": 10,
}


def init(model_config, shape=(28, 28, 1)):
  model = models.ConvNet(**model_config)
  return model, jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((2, *shape), jnp.uint8))["params"]


def run(model, params, images, **kwargs):
  """``model.apply``, jitted as training runs it (op by op, every primitive would compile on its own)."""
  return jax.jit(functools.partial(model.apply, **kwargs))({"params": params}, images)


def test_seed_network_shapes_and_pinned_parameter_count():
  specs = models.layer_specs(SEED, (28, 28, 1))
  assert [(s.name, s.output_shape) for s in specs] == [
    ("conv0", (26, 26, 64)),
    ("pool0", (13, 13, 64)),
    ("conv1", (11, 11, 64)),
    ("pool1", (5, 5, 64)),
    ("flatten", (1600,)),
    ("dense0", (128,)),
    ("logits", (10,)),
  ]
  assert [s.params for s in specs if s.params] == [640, 36_928, 204_928, 1_290]
  model, params = init(SEED)
  assert models.count_params(params) == 243_786
  logits = run(model, params, jnp.zeros((3, 28, 28, 1), jnp.uint8))
  assert logits.shape == (3, 10)
  # 2 FLOPs per multiply-add: 10.112 MFLOP forward (convnet.model_table prints the same count).
  assert sum(s.flops for s in specs) == 10_112_000


@pytest.mark.parametrize(
  "model_config, shape",
  [
    ({"features": (16,), "kernel_size": 5, "dense_features": ()}, (28, 28, 1)),
    ({"features": (32, 32, 32), "kernel_size": 3, "dense_features": (64, 32)}, (28, 28, 1)),
    ({"features": (8, 16), "kernel_size": (5, 3), "padding": "SAME", "pool_size": (2, 1)}, (28, 28, 1)),
    ({"features": (8, 8), "kernel_size": 3, "num_classes": 100}, (32, 32, 3)),
  ],
)
def test_initialised_model_agrees_with_layer_specs(model_config, shape):
  specs = models.layer_specs(model_config, shape)
  model, params = init({**model_config, "crop_to_pool": False}, shape)  # full maps, as Keras shows them
  assert models.count_params(params) == sum(s.params for s in specs)
  logits, state = run(model, params, jnp.zeros((2, *shape), jnp.uint8), mutable=["intermediates"])
  assert logits.shape == (2, specs[-1].output_shape[0])
  sown = {name: value[0].shape[1:] for name, value in state["intermediates"].items()}
  assert sown == {s.name: s.output_shape for s in specs if s.kind != "Dense"}


@pytest.mark.parametrize(
  "model_config, shape, message",
  [
    ({"features": (64, 64, 64, 64)}, (28, 28, 1), "conv3: a 3x3 kernel does not fit its 1x1 input"),
    ({"features": (64,), "kernel_size": 30}, (28, 28, 1), "conv0: a 30x30 kernel does not fit its 28x28 input"),
    (
      {"features": (8,) * 5, "kernel_size": 5, "padding": "SAME"},
      (28, 28, 1),
      "pool4: a 2x2 pool does not fit its 1x1 input",
    ),
    ({"features": (64, -3)}, (28, 28, 1), "model.features=(64, -3) is not allowed"),
    ({"features": (64, 0)}, (28, 28, 1), "model.features=(64, 0) is not allowed"),
    ({"features": (8, 8), "kernel_size": (3, 3, 3)}, (28, 28, 1), "model.kernel_size=(3, 3, 3) has 3 entries"),
    ({"features": (8,), "padding": "FULL"}, (28, 28, 1), "model.padding='FULL' is not allowed"),
    ({"features": (8,), "filters": 3}, (28, 28, 1), "unknown model field(s) ['filters']"),
    ({"features": (8,), "ops": "cudnn"}, (28, 28, 1), "model.ops='cudnn' is not allowed"),
    ({"features": (8,), "pool_size": 0}, (28, 28, 1), "model.pool_size=(0,) is not allowed"),
  ],
)
def test_impossible_configs_give_one_clear_error(model_config, shape, message):
  with pytest.raises(ConfigError) as info:
    models.layer_specs(model_config, shape)
  assert message in str(info.value)
  assert "\n" not in str(info.value)


def test_integer_images_are_scaled_and_float_images_used_as_given():
  model, params = init(SEED)
  images = np.random.default_rng(0).integers(0, 256, (4, 28, 28, 1), dtype=np.uint8)
  from_uint8 = run(model, params, images)
  from_float = run(model, params, images.astype(np.float32) / 255.0)
  np.testing.assert_allclose(from_uint8, from_float, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("model_config", [SEED, {"features": (8, 16), "kernel_size": (5, 3), "padding": "SAME"}])
def test_fast_ops_equal_flax_layers_forward_and_gradient(model_config):
  fast, params = init({**model_config, "ops": "fast"})
  flax_model, flax_params = init({**model_config, "ops": "flax"})
  assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(flax_params)
  # Continuous random images: no ties inside pooling windows, where the two tie rules differ.
  images = jax.random.uniform(jax.random.PRNGKey(1), (8, 28, 28, 1))
  labels = jnp.arange(8) % 10

  def loss(model):
    def fn(p):
      logits = model.apply({"params": p}, images)
      return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(8), labels])

    return fn

  np.testing.assert_allclose(run(fast, params, images), run(flax_model, params, images), rtol=1e-5, atol=1e-5)
  grads_fast = jax.jit(jax.grad(loss(fast)))(params)
  grads_flax = jax.jit(jax.grad(loss(flax_model)))(params)
  for a, b in zip(jax.tree_util.tree_leaves(grads_fast), jax.tree_util.tree_leaves(grads_flax), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
  "model_config", [SEED, {"features": (8, 8, 8), "kernel_size": (5, 3, 3), "pool_size": (2, 3, 1)}]
)
@pytest.mark.slow
def test_cropping_to_the_pooled_region_changes_neither_logits_nor_gradients(model_config):
  cropped, params = init({**model_config, "crop_to_pool": True})
  full = cropped.clone(crop_to_pool=False)
  images = jax.random.uniform(jax.random.PRNGKey(2), (4, 28, 28, 1))

  def loss(model):
    return lambda p: jnp.sum(jnp.sin(model.apply({"params": p}, images)))

  np.testing.assert_allclose(run(cropped, params, images), run(full, params, images), rtol=1e-5, atol=1e-6)
  for a, b in zip(
    jax.tree_util.tree_leaves(jax.jit(jax.grad(loss(cropped)))(params)),
    jax.tree_util.tree_leaves(jax.jit(jax.grad(loss(full)))(params)),
    strict=True,
  ):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  _, sown = run(cropped, params, images, mutable=["intermediates"])
  if model_config is SEED:
    assert sown["intermediates"]["conv1"][0].shape == (4, 10, 10, 64)  # 11x11 computed as 10x10


@pytest.mark.parametrize(
  "model_config",
  [SEED, {"features": (6, 4), "kernel_size": (5, 3), "padding": "SAME", "pool_size": (3, 2), "dense_features": ()}],
)
@pytest.mark.slow
def test_fused_first_layer_changes_neither_logits_nor_gradients(model_config):
  fused, params = init(model_config)  # fuse_max_channels=4: the 1-channel first conv is fused
  unfused = fused.clone(fuse_max_channels=0)
  images = jax.random.randint(jax.random.PRNGKey(3), (4, 28, 28, 1), 0, 256).astype(jnp.uint8)

  def loss(model):
    return lambda p: jnp.sum(jnp.sin(model.apply({"params": p}, images)))

  logits = run(fused, params, images)
  np.testing.assert_allclose(logits, run(unfused, params, images), rtol=1e-5, atol=1e-5)
  # Collecting activations runs the layer unfused (to sow its full map); same logits.
  sown_logits, sown = run(fused, params, images, mutable=["intermediates"])
  np.testing.assert_allclose(logits, sown_logits, rtol=1e-5, atol=1e-5)
  assert "conv0" in sown["intermediates"]
  for a, b in zip(
    jax.tree_util.tree_leaves(jax.jit(jax.grad(loss(fused)))(params)),
    jax.tree_util.tree_leaves(jax.jit(jax.grad(loss(unfused)))(params)),
    strict=True,
  ):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_fused_layer_executed_flops_and_bad_setting():
  specs = {s.name: s for s in models.layer_specs({**SEED, "kernel_size": 5}, (28, 28, 1))}
  assert specs["conv0"].executed_flops == specs["conv0"].flops  # 24x24: every output is in a window
  specs = {s.name: s for s in models.layer_specs({**SEED, "pool_size": 3}, (28, 28, 1))}
  assert specs["conv0"].flops == 2 * 9 * 64 * 26 * 26
  assert specs["conv0"].executed_flops == 2 * 9 * 64 * 24 * 24  # fused: only the 8x8 windows of 3x3
  with pytest.raises(ConfigError, match="fuse_max_channels"):
    models.layer_specs({**SEED, "fuse_max_channels": -1}, (28, 28, 1))


def test_executed_flops_count_the_cropped_conv():
  specs = {s.name: s for s in models.layer_specs(SEED, (28, 28, 1))}
  assert specs["conv1"].flops == 2 * 9 * 64 * 64 * 11 * 11
  assert specs["conv1"].executed_flops == 2 * 9 * 64 * 64 * 10 * 10
  assert specs["conv0"].executed_flops == specs["conv0"].flops  # 26x26 pools without a remainder
  full = {s.name: s for s in models.layer_specs({**SEED, "crop_to_pool": False}, (28, 28, 1))}
  assert full["conv1"].executed_flops == full["conv1"].flops


@pytest.mark.slow
@pytest.mark.parametrize("ops_name", ["fast", "flax"])
def test_bfloat16_compute_keeps_float32_parameters_and_logits(ops_name):
  model32, params = init({**SEED, "ops": ops_name})
  model16 = model32.clone(dtype="bfloat16")
  images = jax.random.uniform(jax.random.PRNGKey(3), (4, 28, 28, 1))
  logits16 = run(model16, params, images)
  assert logits16.dtype == jnp.float32
  np.testing.assert_allclose(logits16, run(model32, params, images), atol=0.05, rtol=0.05)
  grads = jax.jit(jax.grad(lambda p: jnp.sum(model16.apply({"params": p}, images) ** 2)))(params)
  assert all(g.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(g))) for g in jax.tree_util.tree_leaves(grads))
  with pytest.raises(ConfigError, match="model.dtype='float16' is not allowed"):
    models.layer_specs({**SEED, "dtype": "float16"}, (28, 28, 1))
