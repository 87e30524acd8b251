"""The train state and the step family: one optimizer update, its compiled forms, and one evaluation path.

:func:`update` is one optimizer step's math on a batch; :func:`train_step` is it jitted on a batch
dict; :func:`scan_updates` runs it over rows of batch indices into the in-memory data, and
:func:`train_chunk` is that jitted with the state donated. Evaluation has one path:
:func:`batch_metrics` per batch, :func:`scan_metrics` over batches (:func:`evaluate_batches`
jitted), used by :func:`evaluate`, ``programs.EpochProgram``, ``programs.SeedsProgram`` and the benchmark.
Metrics are sums over the unmasked examples (a last partial batch is padded and masked), turned
into means by :func:`summarize`.
"""

from collections.abc import Callable, Mapping
import dataclasses
from typing import Any

from flax.training import train_state
import jax
from jax import lax
import jax.numpy as jnp
import optax

from convnet import batching, configuration, models


class TrainState(train_state.TrainState):
  pass


def make_optimizer(config: Mapping[str, Any]) -> optax.GradientTransformation:
  if config["optimizer"] == "sgd":
    return optax.sgd(config["learning_rate"], momentum=config.get("momentum") or None)
  return optax.adam(config["learning_rate"])


@dataclasses.dataclass(frozen=True)
class ImageApply:
  """A train state's ``apply_fn``: ``model.apply`` for images given as NHWC, or flat (``(B, H*W*C)``, reshaped
  to NHWC inside the compiled step, a free bitcast). The programs keep the dataset on the device flat (``batching.flat``):
  a TPU pads an array's minor dimension to 128 lanes, and uint8 ``(N, 28, 28, 1)`` would take about 7 GB
  there instead of 47 MB; ``(N, 784)`` pads to 896 columns."""

  apply: Callable[..., Any]
  image_shape: tuple[int, ...]

  def __call__(self, variables, images, **kwargs):
    if images.ndim == 2:
      images = images.reshape(images.shape[0], *self.image_shape)
    return self.apply(variables, images, **kwargs)


def create_train_state(rng: jax.Array, config: Mapping[str, Any], image_shape, num_classes: int) -> TrainState:
  """A fresh TrainState; checks the config's shapes first (ConfigError names the layer)."""
  kwargs = configuration.model_kwargs(config, num_classes)
  models.layer_specs(kwargs, image_shape)
  model = models.ConvNet(**kwargs)
  # One compiled init instead of dozens of small eager ops (2.6x faster here; the same values).
  params = jax.jit(model.init)(rng, jnp.zeros((1, *image_shape), jnp.uint8))["params"]
  apply_fn = ImageApply(model.apply, tuple(image_shape))
  return TrainState.create(apply_fn=apply_fn, params=params, tx=make_optimizer(config))


def compute_metrics(logits: jax.Array, labels: jax.Array, mask: jax.Array) -> dict[str, jax.Array]:
  """Sums over the unmasked examples: cross-entropy ``loss_sum``, ``correct`` and ``count``."""
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
  return {"loss_sum": jnp.sum(losses * mask), "correct": jnp.sum(correct * mask), "count": jnp.sum(mask)}


def summarize(metrics: Mapping[str, Any]) -> dict[str, float]:
  """loss and accuracy (means over examples) from summed metrics."""
  count = max(float(metrics["count"]), 1.0)
  return {"loss": float(metrics["loss_sum"]) / count, "accuracy": float(metrics["correct"]) / count}


def scored(results: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
  """``{"test": {"loss": ...}}`` as one record's fields: ``{"test_loss": ...}``."""
  return {f"{name}_{k}": v for name, metrics in results.items() for k, v in metrics.items()}


def _mask(batch: Mapping[str, jax.Array]) -> jax.Array:
  return batch.get("mask", jnp.ones(batch["label"].shape, jnp.float32))


def _sum_over_steps(tree):
  return jax.tree_util.tree_map(lambda x: jnp.sum(x, axis=0), tree)


def update(state: TrainState, images, labels, mask, lr_scale=None) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer step on a batch (masked examples count for nothing); not jitted.

  ``lr_scale`` multiplies the optimizer's update: the step of the same optimizer at ``lr_scale`` times
  its learning rate (Adam's and SGD's updates are linear in it, and their state does not depend on
  it), so models with different learning rates share one compiled program (``programs.SeedsProgram``)
  and their checkpoints stay those of a model trained alone.
  """

  def loss_fn(params):
    logits = state.apply_fn({"params": params}, images)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return jnp.sum(losses * mask) / jnp.maximum(jnp.sum(mask), 1.0), logits

  (_, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  if lr_scale is None:
    return state.apply_gradients(grads=grads), compute_metrics(logits, labels, mask)
  updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
  updates = jax.tree_util.tree_map(lambda u: u * lr_scale.astype(u.dtype), updates)
  state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates), opt_state=opt_state)
  return state, compute_metrics(logits, labels, mask)


@jax.jit
def train_step(state: TrainState, batch: Mapping[str, jax.Array]) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer step on ``batch`` (``image`` uint8 NHWC, ``label``, optional ``mask``)."""
  return update(state, batch["image"], batch["label"], _mask(batch))


def scan_updates(state: TrainState, images, labels, batch_indices, batch_mask, lr_scale=None):
  """Optimizer steps over the rows of ``batch_indices`` into the data; the state and summed metrics."""

  def body(state, xs):
    indices, mask = xs
    return update(state, images[indices], labels[indices], mask, lr_scale)

  state, metrics = lax.scan(body, state, (batch_indices, batch_mask))
  return state, _sum_over_steps(metrics)


train_chunk = jax.jit(scan_updates, donate_argnums=0)  # a compiled chunk of steps, the state donated


def batch_metrics(state: TrainState, images, labels, mask) -> dict[str, jax.Array]:
  return compute_metrics(state.apply_fn({"params": state.params}, images), labels, mask)


@jax.jit
def eval_step(state: TrainState, batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
  """Summed metrics of ``batch``."""
  return batch_metrics(state, batch["image"], batch["label"], _mask(batch))


def scan_metrics(state: TrainState, images, labels, batch_indices, batch_mask) -> dict[str, jax.Array]:
  """Summed metrics over the rows of ``batch_indices`` into the data; not jitted."""

  def body(_, xs):
    indices, mask = xs
    return None, batch_metrics(state, images[indices], labels[indices], mask)

  return _sum_over_steps(lax.scan(body, None, (batch_indices, batch_mask))[1])


evaluate_batches = jax.jit(scan_metrics)


def evaluate(state: TrainState, images, labels, batch_size: int = 500) -> dict[str, float]:
  """Loss and accuracy over every example of ``images`` (uint8 NHWC) — nothing dropped."""
  indices, mask = batching.batch_layout(len(labels), batch_size)
  return summarize(evaluate_batches(state, jnp.asarray(images), jnp.asarray(labels), indices, mask))
