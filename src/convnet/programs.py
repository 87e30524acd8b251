"""Compiled programs over device-resident data: one model, or several seeds of one config in lockstep.

The dataset lives on the device as uint8 arrays, each image flat (``batching.flat``: no minor dimension
of 1 for a TPU to pad; ``steps.ImageApply`` restores NHWC inside the step). Each epoch draws a permutation on the device and
runs its steps (``convnet.steps``) as a ``lax.scan`` inside compiled calls (``config.steps_per_call``
steps per call; 0 = the whole epoch), with the train state donated; the host reads the metrics once
per call when a progress bar is shown, else once per epoch. A last partial batch is kept and masked,
train and evaluation alike, so every example counts and every evaluation split (validation when the
data has one, and test: ``Dataset.eval_splits``) is scored whole. Between calls a Ctrl-C is taken
(``convnet.interrupts.check``).

* :class:`EpochProgram`: one model, data parallel over a mesh of devices (the benchmark uses it too);
* :class:`SeedsProgram`: the models of several seeds of one config trained as one ``vmap``-ed program
  (on an accelerator a batch-32 step leaves most of the device idle; mapping the step over seeds fills
  it while each model still sees its own initialisation, its own shuffle and batches of 32). Each
  seed's numbers equal those of a separate :class:`EpochProgram` run with that seed.

Both meet the training loop (``convnet.train.fit``) through one interface, :class:`Program`: a list of
models, each with its state, trained an epoch at a time and evaluated, every result one per model.
:func:`build` makes the one that fits.
"""

from collections.abc import Mapping, Sequence
import time
from typing import Any, Protocol

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from convnet import batching, configuration, devices, input_pipeline, interrupts, numerics, steps


class Program(Protocol):
  """What the training loop needs of a compiled program: ``count`` models trained together."""

  count: int
  num_train: int  # training examples per epoch
  num_steps: int  # steps per epoch
  compile_seconds: float
  mesh: Mesh

  def states(self) -> list[steps.TrainState]:
    """Each model's train state (for checkpoints)."""

  def load(self, states: Sequence[steps.TrainState]) -> None:
    """Replaces the models' states (restored from checkpoints)."""

  def train_epoch(self, epoch: int, bar=None) -> list[dict[str, float]]:
    """One epoch for every model; each model's mean train loss and accuracy."""

  def evaluate(self) -> list[dict[str, float]]:
    """Each model's loss and accuracy over each evaluation split: ``{"validation_accuracy": ..., "test_loss": ...}``."""


def build(
  config: Mapping[str, Any],
  data: input_pipeline.Dataset,
  seeds: Sequence[int],
  learning_rates: Sequence[float] | None = None,
) -> Program:
  """The program for ``config`` with these seeds (and, optionally, a learning rate per seed): one model,
  or the models in lockstep."""
  if len(seeds) == 1:
    return OneModel({**config, "learning_rate": learning_rates[0]} if learning_rates else config, data, seeds[0])
  return SeedsProgram(config, data, seeds, learning_rates=learning_rates)


def _show(bar, total: Mapping[str, Any], count: int) -> None:
  """The progress bar's loss and accuracy so far (of the first model)."""
  seen = steps.summarize(jax.tree_util.tree_map(lambda v: v if jnp.ndim(v) == 0 else v[0], total))
  bar.set_postfix(loss=f"{seen['loss']:.4f}", accuracy=f"{seen['accuracy']:.4f}", refresh=False)
  bar.update(count)


class EpochProgram:
  """One config's compiled programs over device-resident data: shuffle, train an epoch, evaluate.

  The programs run on ``mesh`` (default: ``config.num_devices`` local devices, ``convnet.devices``):
  the data and the state replicated, every batch's rows split across the devices. Everything is
  compiled in the constructor (``compile_seconds``), so that epoch times exclude compilation.
  The training loop (through :class:`OneModel`) and ``convnet.benchmark`` both run epochs through it.
  """

  def __init__(
    self,
    state: steps.TrainState,
    data: input_pipeline.Dataset,
    config: Mapping[str, Any],
    shuffle_rng: jax.Array,
    mesh: Mesh | None = None,
  ):
    self.mesh = mesh if mesh is not None else devices.make_mesh(config.get("num_devices"))
    devices.check_divisible(self.mesh, {"batch_size": config["batch_size"]})
    eval_batch_size = devices.padded(config["eval_batch_size"], self.mesh.devices.size)  # padding is masked
    self.replicated, rows = devices.replicated(self.mesh), devices.batch_sharding(self.mesh)
    self.shuffle_rng = shuffle_rng
    self.train_images, self.train_labels = devices.put((batching.flat(data.train_images), data.train_labels),
                                                       self.replicated)  # fmt: skip
    self.num_train = len(data.train_labels)
    self.num_steps = -(-self.num_train // config["batch_size"])
    self.chunks = batching.chunks(self.num_steps, config["steps_per_call"])
    self.eval_sets = batching.eval_sets(data, eval_batch_size, self.replicated, rows)
    state = self.place(state)
    start = time.perf_counter()
    with numerics.matmul_precision(config):  # jit traces (and fixes the precision of) every matmul here
      key = jax.random.fold_in(shuffle_rng, 0)
      shuffle = jax.jit(batching.shuffled_batches, static_argnums=(1, 2), out_shardings=rows)
      self.shuffle_fn = shuffle.lower(key, self.num_train, config["batch_size"]).compile()
      indices, mask = self.shuffle_fn(key)
      train_chunk = jax.jit(steps.scan_updates, donate_argnums=0, out_shardings=self.replicated)
      self.step_fns = {}
      for begin, end in self.chunks:
        if end - begin not in self.step_fns:
          self.step_fns[end - begin] = train_chunk.lower(
            state, self.train_images, self.train_labels, indices[begin:end], mask[begin:end]
          ).compile()
      evaluate = jax.jit(steps.scan_metrics, out_shardings=self.replicated)
      self.eval_fns = {name: evaluate.lower(state, *arrays).compile() for name, arrays in self.eval_sets.items()}
    self.compile_seconds = time.perf_counter() - start

  def place(self, state: steps.TrainState) -> steps.TrainState:
    """``state`` replicated on the program's devices (a no-op for a state already there)."""
    return devices.put(state, self.replicated)

  def train_epoch(self, state: steps.TrainState, epoch: int, bar=None) -> tuple[steps.TrainState, dict[str, float]]:
    """One epoch (shuffled by ``epoch``); returns the new state and the epoch's mean loss and accuracy.

    The host reads the metrics once at the end, or after every call when ``bar`` is an active progress bar.
    """
    state = self.place(state)
    indices, mask = self.shuffle_fn(jax.random.fold_in(self.shuffle_rng, epoch))
    total = None
    for begin, end in self.chunks:
      state, metrics = self.step_fns[end - begin](
        state, self.train_images, self.train_labels, indices[begin:end], mask[begin:end]
      )
      total = metrics if total is None else jax.tree_util.tree_map(jnp.add, total, metrics)
      interrupts.check()
      if bar is not None and not bar.disable:
        _show(bar, total, end - begin)
    return state, steps.summarize(jax.device_get(total))

  def evaluate(self, state: steps.TrainState) -> dict[str, float]:
    """Loss and accuracy over each whole evaluation split: ``validation_loss``, ..., ``test_accuracy``."""
    results = {name: fn(state, *self.eval_sets[name]) for name, fn in self.eval_fns.items()}
    return steps.scored({name: steps.summarize(m) for name, m in jax.device_get(results).items()})


class OneModel:
  """One model as a :class:`Program`: an :class:`EpochProgram` and the state it trains."""

  count = 1

  def __init__(self, config: Mapping[str, Any], data: input_pipeline.Dataset, seed: int):
    init_rng, shuffle_rng = jax.random.split(jax.random.PRNGKey(seed))
    state = steps.create_train_state(init_rng, config, data.image_shape, data.num_classes)
    self.program = EpochProgram(state, data, config, shuffle_rng)
    self.state = self.program.place(state)
    self.mesh, self.num_train, self.num_steps = self.program.mesh, self.program.num_train, self.program.num_steps
    self.compile_seconds = self.program.compile_seconds

  def states(self) -> list[steps.TrainState]:
    return [self.state]

  def load(self, states: Sequence[steps.TrainState]) -> None:
    (self.state,) = states
    self.state = self.program.place(self.state)

  def train_epoch(self, epoch: int, bar=None) -> list[dict[str, float]]:
    self.state, metrics = self.program.train_epoch(self.state, epoch, bar)
    return [metrics]

  def evaluate(self) -> list[dict[str, float]]:
    return [self.program.evaluate(self.state)]


def _per_seed(metrics: Mapping[str, jax.Array], count: int) -> list[dict[str, float]]:
  host = jax.device_get(metrics)
  return [steps.summarize({k: v[i] for k, v in host.items()}) for i in range(count)]


# The trainer's own step and evaluation, mapped over a leading seeds axis of the states (and of the
# batch order, in training); the data is shared.
_train_chunks = jax.vmap(steps.scan_updates, in_axes=(0, None, None, 0, 0))
_train_chunks_scaled = jax.vmap(steps.scan_updates, in_axes=(0, None, None, 0, 0, 0))  # a learning rate per model
_evaluate = jax.vmap(steps.scan_metrics, in_axes=(0, None, None, None, None))


class SeedsProgram:
  """The models of ``seeds`` (stacked train states) and their compiled epoch and evaluation.

  ``learning_rates`` (one per seed; default: the config's for all) gives each model its own learning
  rate in the same program (``steps.update``'s ``lr_scale``): the seeds and learning rates of one
  architecture train as one vmapped program, each model equal to its separate run up to float
  rounding. A seed may repeat with another learning rate; each (seed, learning rate) is one model.

  With several devices (``mesh``; default: ``config.num_devices`` local devices), the seeds are split
  across them, each device training its own seeds with no communication. Any number of seeds works on
  any number of devices (``devices.seeds_layout``): the program takes the devices that give the fewest
  seeds per device, and pads the seeds to a multiple of them with copies of the last one, whose
  results are dropped.
  """

  def __init__(
    self,
    config: Mapping[str, Any],
    data: input_pipeline.Dataset,
    seeds: Sequence[int],
    mesh: Mesh | None = None,
    learning_rates: Sequence[float] | None = None,
  ):
    rates = tuple(learning_rates) if learning_rates is not None else (config["learning_rate"],) * len(seeds)
    if not seeds or len(rates) != len(seeds) or len(set(zip(seeds, rates, strict=True))) != len(seeds):
      raise ValueError(f"seeds={tuple(seeds)} with learning_rates={rates} must be distinct pairs, one rate per seed")
    self.seeds = tuple(seeds)
    config = dict(config)
    for rate in rates:
      configuration.check_config({**config, "seed": 0, "learning_rate": rate})
    mesh = mesh if mesh is not None else devices.make_mesh(config.get("num_devices"), axis="seeds")
    used, self.slots = devices.seeds_layout(len(self.seeds), mesh.devices.size)
    self.mesh = Mesh(mesh.devices[:used], mesh.axis_names)
    per_seed, shared = devices.leading_sharding(self.mesh), devices.replicated(self.mesh)
    slot_seeds = self.seeds + (self.seeds[-1],) * (self.slots - len(self.seeds))
    slot_rates = rates + (rates[-1],) * (self.slots - len(rates))
    # Each model's step is the config's optimizer at its own rate: the update scaled by rate / config's rate.
    scales = [rate / config["learning_rate"] for rate in slot_rates]
    self.lr_scales = (
      None if all(scale == 1 for scale in scales) else devices.put(jnp.asarray(scales, jnp.float32), per_seed)
    )
    keys = jnp.stack([jax.random.PRNGKey(s) for s in slot_seeds])
    init_keys, shuffle_keys = jax.vmap(jax.random.split, out_axes=1)(keys)
    self.shuffle_keys = devices.put(shuffle_keys, per_seed)
    states = jax.vmap(lambda k: steps.create_train_state(k, config, data.image_shape, data.num_classes))(init_keys)
    self._per_seed = per_seed
    self.stacked = devices.put(states, per_seed)  # every leaf with a leading seeds axis
    self.images, self.labels = devices.put((batching.flat(data.train_images), data.train_labels), shared)
    self.count = len(self.seeds)
    self.num_train, self.batch_size = len(data.train_labels), config["batch_size"]
    self.num_steps = -(-self.num_train // self.batch_size)
    self.chunks = batching.chunks(self.num_steps, config["steps_per_call"])
    self.eval_sets = batching.eval_sets(data, config["eval_batch_size"], shared, shared)
    start = time.perf_counter()
    with numerics.matmul_precision(config):  # jit traces (and fixes the precision of) every matmul here
      self._shuffle = jax.jit(
        jax.vmap(lambda k: batching.shuffled_batches(k, self.num_train, self.batch_size)), out_shardings=per_seed
      )
      indices, mask = self._shuffle(self._epoch_keys(0))
      train = jax.jit(_train_chunks if self.lr_scales is None else _train_chunks_scaled, donate_argnums=0,
                      out_shardings=per_seed)  # fmt: skip
      self._steps = {}
      for begin, end in self.chunks:
        if end - begin not in self._steps:
          self._steps[end - begin] = train.lower(
            self.stacked, self.images, self.labels, indices[:, begin:end], mask[:, begin:end], *self._scales()
          ).compile()
      evaluate = jax.jit(_evaluate, out_shardings=per_seed)
      self._evals = {name: evaluate.lower(self.stacked, *arrays).compile() for name, arrays in self.eval_sets.items()}
    self.compile_seconds = time.perf_counter() - start

  def _scales(self) -> tuple:
    return () if self.lr_scales is None else (self.lr_scales,)

  def _epoch_keys(self, epoch: int) -> jax.Array:
    return jax.vmap(lambda k: jax.random.fold_in(k, epoch))(self.shuffle_keys)

  def states(self) -> list[steps.TrainState]:
    return _unstacked(self.stacked, self.count)  # padding slots left out

  def load(self, states: Sequence[steps.TrainState]) -> None:
    states = list(states) + [states[-1]] * (self.slots - len(states))
    self.stacked = devices.put(_stacked(states), self._per_seed)

  def train_epoch(self, epoch: int, bar=None) -> list[dict[str, float]]:
    """One epoch for every seed (each shuffled as its own run would be); loss and accuracy per seed."""
    indices, mask = self._shuffle(self._epoch_keys(epoch))
    total = None
    for begin, end in self.chunks:
      self.stacked, metrics = self._steps[end - begin](
        self.stacked, self.images, self.labels, indices[:, begin:end], mask[:, begin:end], *self._scales()
      )
      total = metrics if total is None else jax.tree_util.tree_map(jnp.add, total, metrics)
      interrupts.check()
      if bar is not None and not bar.disable:
        _show(bar, total, end - begin)
    return _per_seed(total, self.count)

  def evaluate(self) -> list[dict[str, float]]:
    """Loss and accuracy per seed over each whole evaluation split (``validation_loss``, ..., ``test_accuracy``)."""
    results = {name: _per_seed(fn(self.stacked, *self.eval_sets[name]), self.count) for name, fn in self._evals.items()}
    return [steps.scored({name: per_seed[i] for name, per_seed in results.items()}) for i in range(self.count)]


def _stacked(trees: Sequence[Any]) -> Any:
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def _unstacked(tree: Any, count: int) -> list[Any]:
  return [jax.tree.map(lambda leaf, i=i: leaf[i], tree) for i in range(count)]
