"""Several seeds of one config trained in lockstep with ``vmap``: one compiled program, batch-32 semantics.

On an accelerator a batch-32 step leaves most of the device idle; mapping the step over seeds fills it
while each model still sees its own initialisation, its own shuffle and batches of 32 (Keras'
recipe). Each seed's numbers equal those of a separate ``train.EpochProgram`` run with that seed::

    program = ensemble.SeedsProgram(config, data, seeds=(0, 1, 2, 3))
    for epoch in range(1, config.num_epochs + 1):
      train_metrics = program.train_epoch(epoch)    # one dict per seed
      test_metrics = program.evaluate()

On a CPU it runs (and is tested) too, but gains nothing: the step already uses every core. With
several devices the seeds are split across them (each device trains its own, no communication).
"""

from collections.abc import Mapping, Sequence
import time
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from convnet import batching, configuration, devices, input_pipeline, steps


def _per_seed(metrics: Mapping[str, jax.Array], count: int) -> list[dict[str, float]]:
  host = jax.device_get(metrics)
  return [steps.summarize({k: v[i] for k, v in host.items()}) for i in range(count)]


# The trainer's own step and evaluation, mapped over a leading seeds axis of the states (and of the
# batch order, in training); the data is shared.
_train_chunks = jax.vmap(steps.scan_updates, in_axes=(0, None, None, 0, 0))
_evaluate = jax.vmap(steps.scan_metrics, in_axes=(0, None, None, None, None))


class SeedsProgram:
  """The models of ``seeds`` (stacked train states) and their compiled epoch and evaluation.

  With several devices (``mesh``; default: ``config.num_devices`` local devices), the seeds are split
  across them, each device training its own seeds with no communication; the number of seeds must
  be a multiple of the number of devices.
  """

  def __init__(
    self, config: Mapping[str, Any], data: input_pipeline.Dataset, seeds: Sequence[int], mesh: Mesh | None = None
  ):
    if not seeds or len(set(seeds)) != len(seeds):
      raise ValueError(f"seeds={tuple(seeds)} must be distinct and non-empty")
    self.seeds = tuple(seeds)
    config = dict(config)
    configuration.check_config({**config, "seed": 0})
    self.mesh = mesh if mesh is not None else devices.make_mesh(config.get("num_devices"), axis="seeds")
    devices.check_divisible(self.mesh, {"the number of seeds": len(self.seeds)})
    per_seed, shared = devices.leading_sharding(self.mesh), devices.replicated(self.mesh)
    keys = jnp.stack([jax.random.PRNGKey(s) for s in self.seeds])
    init_keys, shuffle_keys = jax.vmap(jax.random.split, out_axes=1)(keys)
    self.shuffle_keys = devices.put(shuffle_keys, per_seed)
    states = jax.vmap(lambda k: steps.create_train_state(k, config, data.image_shape, data.num_classes))(init_keys)
    self.states = devices.put(states, per_seed)
    self.images, self.labels, self.test_images, self.test_labels = devices.put(
      (data.train_images, data.train_labels, data.test_images, data.test_labels), shared
    )
    self.num_train, self.batch_size = len(data.train_labels), config["batch_size"]
    self.eval_indices, self.eval_mask = devices.put(
      batching.batch_layout(len(data.test_labels), config["eval_batch_size"]), shared
    )
    start = time.perf_counter()
    self._shuffle = jax.jit(
      jax.vmap(lambda k: batching.shuffled_batches(k, self.num_train, self.batch_size)), out_shardings=per_seed
    )
    indices, mask = self._shuffle(self._epoch_keys(0))
    train = jax.jit(_train_chunks, donate_argnums=0, out_shardings=per_seed)
    self._step = train.lower(self.states, self.images, self.labels, indices, mask).compile()
    self._eval = (
      jax.jit(_evaluate, out_shardings=per_seed)
      .lower(self.states, self.test_images, self.test_labels, self.eval_indices, self.eval_mask)
      .compile()
    )
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
