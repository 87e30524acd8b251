"""Several seeds of one config trained in lockstep with ``vmap``: one compiled program, batch-32 semantics.

On an accelerator a batch-32 step leaves most of the device idle; mapping the step over seeds fills it
while each model still sees its own initialisation, its own shuffle and batches of 32 (Keras'
recipe). Each seed's numbers equal those of a separate ``train.EpochProgram`` run with that seed::

    program = ensemble.SeedsProgram(config, data, seeds=(0, 1, 2, 3))
    for epoch in range(1, config.num_epochs + 1):
      train_metrics = program.train_epoch(epoch)    # one dict per seed
      test_metrics = program.evaluate()

On a CPU it runs (and is tested) too, but gains nothing: the step already uses every core.
"""

from collections.abc import Mapping, Sequence
import time
from typing import Any

import jax
import jax.numpy as jnp

from convnet import batching, configuration, input_pipeline, steps


def _per_seed(metrics: Mapping[str, jax.Array], count: int) -> list[dict[str, float]]:
  host = jax.device_get(metrics)
  return [steps.summarize({k: v[i] for k, v in host.items()}) for i in range(count)]


# The trainer's own step and evaluation, mapped over a leading seeds axis of the states (and of the
# batch order, in training); the data is shared.
_train_chunks = jax.jit(jax.vmap(steps.scan_updates, in_axes=(0, None, None, 0, 0)), donate_argnums=0)
_evaluate = jax.jit(jax.vmap(steps.scan_metrics, in_axes=(0, None, None, None, None)))


class SeedsProgram:
  """The models of ``seeds`` (stacked train states) and their compiled epoch and evaluation."""

  def __init__(self, config: Mapping[str, Any], data: input_pipeline.Dataset, seeds: Sequence[int]):
    if not seeds or len(set(seeds)) != len(seeds):
      raise ValueError(f"seeds={tuple(seeds)} must be distinct and non-empty")
    self.seeds = tuple(seeds)
    config = dict(config)
    configuration.check_config({**config, "seed": 0})
    keys = jnp.stack([jax.random.PRNGKey(s) for s in self.seeds])
    init_keys, self.shuffle_keys = jax.vmap(jax.random.split, out_axes=1)(keys)
    self.states = jax.vmap(lambda k: steps.create_train_state(k, config, data.image_shape, data.num_classes))(init_keys)
    self.images, self.labels = jax.device_put(data.train_images), jax.device_put(data.train_labels)
    self.test_images, self.test_labels = jax.device_put(data.test_images), jax.device_put(data.test_labels)
    self.num_train, self.batch_size = len(data.train_labels), config["batch_size"]
    self.eval_indices, self.eval_mask = (
      jnp.asarray(a) for a in batching.batch_layout(len(data.test_labels), config["eval_batch_size"])
    )
    start = time.perf_counter()
    self._shuffle = jax.jit(jax.vmap(lambda k: batching.shuffled_batches(k, self.num_train, self.batch_size)))
    indices, mask = self._shuffle(self._epoch_keys(0))
    self._step = _train_chunks.lower(self.states, self.images, self.labels, indices, mask).compile()
    self._eval = _evaluate.lower(
      self.states, self.test_images, self.test_labels, self.eval_indices, self.eval_mask
    ).compile()
    self.compile_seconds = time.perf_counter() - start

  def _epoch_keys(self, epoch: int) -> jax.Array:
    return jax.vmap(lambda k: jax.random.fold_in(k, epoch))(self.shuffle_keys)

  def train_epoch(self, epoch: int) -> list[dict[str, float]]:
    """One epoch for every seed (each shuffled as its own run would be); loss and accuracy per seed."""
    indices, mask = self._shuffle(self._epoch_keys(epoch))
    self.states, metrics = self._step(self.states, self.images, self.labels, indices, mask)
    return _per_seed(metrics, len(self.seeds))

  def evaluate(self) -> list[dict[str, float]]:
    """Test loss and accuracy per seed, over the whole test set."""
    return _per_seed(
      self._eval(self.states, self.test_images, self.test_labels, self.eval_indices, self.eval_mask), len(self.seeds)
    )
