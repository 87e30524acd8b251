"""Batches as rows of indices into the in-memory dataset: in order (evaluation) or shuffled (training);
an epoch's compiled calls (:func:`chunks`) and the evaluation splits on the device (:func:`eval_sets`).

A batch is a row of example indices and a row of mask values; a last partial batch is padded with
index 0 and masked out, so that every example counts once and the shapes stay static for ``jit``.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from convnet import devices


def batch_layout(num_examples: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
  """Row-major batches of 0..n-1 with the last partial batch padded: (indices, mask), both (steps, batch)."""
  steps = -(-num_examples // batch_size)
  flat = np.arange(steps * batch_size)
  mask = (flat < num_examples).astype(np.float32)
  return np.where(flat < num_examples, flat, 0).reshape(steps, batch_size), mask.reshape(steps, batch_size)


@functools.partial(jax.jit, static_argnums=(1, 2))
def shuffled_batches(key: jax.Array, num_examples: int, batch_size: int):
  """A fresh permutation, laid out like :func:`batch_layout`, drawn on the device."""
  indices, mask = batch_layout(num_examples, batch_size)
  permutation = jax.random.permutation(key, num_examples)
  return permutation[jnp.asarray(indices)], jnp.asarray(mask)


def flat(images):
  """Images ``(N, H, W, C)`` as ``(N, H*W*C)`` (a view: no copy): how the programs keep the data on the device
  (``steps.ImageApply`` restores NHWC inside the step)."""
  return images.reshape(images.shape[0], -1)


def chunks(num_steps: int, steps_per_call: int) -> list[tuple[int, int]]:
  """The (begin, end) steps of each compiled call of an epoch."""
  size = num_steps if steps_per_call <= 0 else min(steps_per_call, num_steps)
  return [(start, min(start + size, num_steps)) for start in range(0, num_steps, size)]


def eval_sets(data, eval_batch_size: int, data_sharding, rows_sharding) -> dict:
  """Each evaluation split of ``data`` (``Dataset.eval_splits``) on the device, in batches of
  ``eval_batch_size``: ``{name: (images, labels, indices, mask)}``."""
  return {
    name: (*devices.put((flat(images), labels), data_sharding),
           *devices.put(batch_layout(len(labels), eval_batch_size), rows_sharding))
    for name, (images, labels) in data.eval_splits.items()
  }  # fmt: skip
