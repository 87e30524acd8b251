"""Training: the train state, the compiled steps, the epoch program, and ``train_and_evaluate``.

The dataset lives on the device as uint8 arrays. Each epoch draws a permutation on the device and
runs its steps as a ``lax.scan`` inside compiled calls (``config.steps_per_call`` steps per call;
0 = the whole epoch), with the train state donated; the host reads the metrics once per call when
a progress bar is shown, else once per epoch. A last partial batch is kept and masked, train and
test alike, so every example counts and the whole test set is scored.

The step family: :func:`update` is one optimizer step's math on a batch; :func:`train_step` is it
jitted on a batch dict; :func:`scan_updates` runs it over rows of batch indices, and
:func:`train_chunk` is that jitted with the state donated. Evaluation has one path:
:func:`batch_metrics` per batch, :func:`scan_metrics` over batches (:func:`evaluate_batches`
jitted), used by :func:`evaluate`, :class:`EpochProgram`, the seeds ensemble and the benchmark.
"""

from collections.abc import Mapping
import logging
import math
import time
from typing import Any

from flax.training import train_state
import jax
from jax import lax
import jax.numpy as jnp
import ml_collections
import optax

from convnet import batching, checkpoints, configuration, input_pipeline, logs, models, provenance
from convnet.errors import TrainingError

log = logging.getLogger("convnet")


class TrainState(train_state.TrainState):
  pass


def make_optimizer(config: Mapping[str, Any]) -> optax.GradientTransformation:
  if config["optimizer"] == "sgd":
    return optax.sgd(config["learning_rate"], momentum=config.get("momentum") or None)
  return optax.adam(config["learning_rate"])


def create_train_state(rng: jax.Array, config: Mapping[str, Any], image_shape, num_classes: int) -> TrainState:
  """A fresh TrainState; checks the config's shapes first (ConfigError names the layer)."""
  kwargs = configuration.model_kwargs(config, num_classes)
  models.layer_specs(kwargs, image_shape)
  model = models.ConvNet(**kwargs)
  # One compiled init instead of dozens of small eager ops (2.6x faster here; the same values).
  params = jax.jit(model.init)(rng, jnp.zeros((1, *image_shape), jnp.uint8))["params"]
  return TrainState.create(apply_fn=model.apply, params=params, tx=make_optimizer(config))


def compute_metrics(logits: jax.Array, labels: jax.Array, mask: jax.Array) -> dict[str, jax.Array]:
  """Sums over the unmasked examples: cross-entropy ``loss_sum``, ``correct`` and ``count``."""
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
  return {"loss_sum": jnp.sum(losses * mask), "correct": jnp.sum(correct * mask), "count": jnp.sum(mask)}


def summarize(metrics: Mapping[str, Any]) -> dict[str, float]:
  """loss and accuracy (means over examples) from summed metrics."""
  count = max(float(metrics["count"]), 1.0)
  return {"loss": float(metrics["loss_sum"]) / count, "accuracy": float(metrics["correct"]) / count}


def _mask(batch: Mapping[str, jax.Array]) -> jax.Array:
  return batch.get("mask", jnp.ones(batch["label"].shape, jnp.float32))


def _sum_over_steps(tree):
  return jax.tree_util.tree_map(lambda x: jnp.sum(x, axis=0), tree)


def update(state: TrainState, images, labels, mask) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer step on a batch (masked examples count for nothing); not jitted."""

  def loss_fn(params):
    logits = state.apply_fn({"params": params}, images)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return jnp.sum(losses * mask) / jnp.maximum(jnp.sum(mask), 1.0), logits

  (_, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  return state.apply_gradients(grads=grads), compute_metrics(logits, labels, mask)


@jax.jit
def train_step(state: TrainState, batch: Mapping[str, jax.Array]) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer step on ``batch`` (``image`` uint8 NHWC, ``label``, optional ``mask``)."""
  return update(state, batch["image"], batch["label"], _mask(batch))


def scan_updates(state: TrainState, images, labels, batch_indices, batch_mask):
  """Optimizer steps over the rows of ``batch_indices`` into the data; the state and summed metrics."""

  def body(state, xs):
    indices, mask = xs
    return update(state, images[indices], labels[indices], mask)

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


class EpochProgram:
  """One config's compiled programs over device-resident data: shuffle, train an epoch, evaluate.

  Everything is compiled in the constructor (``compile_seconds``), so that epoch times exclude
  compilation. ``train_and_evaluate`` and ``convnet.benchmark`` both run epochs through it.
  """

  def __init__(
    self, state: TrainState, data: input_pipeline.Dataset, config: Mapping[str, Any], shuffle_rng: jax.Array
  ):
    self.shuffle_rng = shuffle_rng
    self.train_images, self.train_labels = jax.device_put(data.train_images), jax.device_put(data.train_labels)
    self.test_images, self.test_labels = jax.device_put(data.test_images), jax.device_put(data.test_labels)
    self.num_train = len(data.train_labels)
    self.num_steps = -(-self.num_train // config["batch_size"])
    self.chunks = _chunks(self.num_steps, config["steps_per_call"])
    self.eval_indices, self.eval_mask = (
      jnp.asarray(a) for a in batching.batch_layout(len(data.test_labels), config["eval_batch_size"])
    )
    start = time.perf_counter()
    key = jax.random.fold_in(shuffle_rng, 0)
    self.shuffle_fn = batching.shuffled_batches.lower(key, self.num_train, config["batch_size"]).compile()
    indices, mask = self.shuffle_fn(key)
    self.step_fns = {}
    for begin, end in self.chunks:
      if end - begin not in self.step_fns:
        self.step_fns[end - begin] = train_chunk.lower(
          state, self.train_images, self.train_labels, indices[begin:end], mask[begin:end]
        ).compile()
    self.eval_fn = evaluate_batches.lower(
      state, self.test_images, self.test_labels, self.eval_indices, self.eval_mask
    ).compile()
    self.compile_seconds = time.perf_counter() - start

  def train_epoch(self, state: TrainState, epoch: int, bar=None) -> tuple[TrainState, dict[str, float]]:
    """One epoch (shuffled by ``epoch``); returns the new state and the epoch's mean loss and accuracy.

    The host reads the metrics once at the end, or after every call when ``bar`` is an active progress bar.
    """
    indices, mask = self.shuffle_fn(jax.random.fold_in(self.shuffle_rng, epoch))
    total = None
    for begin, end in self.chunks:
      state, metrics = self.step_fns[end - begin](
        state, self.train_images, self.train_labels, indices[begin:end], mask[begin:end]
      )
      total = metrics if total is None else jax.tree_util.tree_map(jnp.add, total, metrics)
      if bar is not None and not bar.disable:
        seen = summarize(total)
        bar.set_postfix(loss=f"{seen['loss']:.4f}", accuracy=f"{seen['accuracy']:.4f}", refresh=False)
        bar.update(end - begin)
    return state, summarize(jax.device_get(total))

  def evaluate(self, state: TrainState) -> dict[str, float]:
    """Loss and accuracy over the whole test set."""
    return summarize(
      jax.device_get(self.eval_fn(state, self.test_images, self.test_labels, self.eval_indices, self.eval_mask))
    )


def _chunks(num_steps: int, steps_per_call: int) -> list[tuple[int, int]]:
  size = num_steps if steps_per_call <= 0 else min(steps_per_call, num_steps)
  return [(start, min(start + size, num_steps)) for start in range(0, num_steps, size)]


def train_and_evaluate(config: ml_collections.ConfigDict | Mapping[str, Any], workdir: str) -> dict[str, Any]:
  """Trains ``config`` in ``workdir`` (resuming from its last checkpoint) and returns summary.json's dict.

  A run that already finished is not trained again: its summary is returned. A NaN loss raises
  TrainingError after writing ``status: "failed"``; bad config values raise ConfigError.
  """
  start_time = time.perf_counter()
  config = configuration.to_dict(config)
  configuration.check_config(config)
  run_log = logs.RunLog(workdir, tensorboard=config["tensorboard"], progress=config["progress"])
  configuration.check_same_run(run_log.read_config(), config, workdir)
  previous = run_log.read_summary()
  if logs.is_finished(previous, config["num_epochs"]):
    log.info("%s: already finished (%d epochs); not training again", workdir, previous["epoch"])
    return previous

  data = input_pipeline.get_datasets(config["dataset"])
  specs = models.layer_specs(configuration.model_kwargs(config, data.num_classes), data.image_shape)
  init_rng, shuffle_rng = jax.random.split(jax.random.PRNGKey(config["seed"]))
  state = create_train_state(init_rng, config, data.image_shape, data.num_classes)
  code = provenance.code_record(models.layer_ops(specs))
  run_log.write_config(config, code)

  done = checkpoints.latest_epoch(workdir) if config["checkpoint"] else None
  history = run_log.keep_metrics_through(done or 0)
  if done is not None:
    state, done = checkpoints.restore(workdir, state)
    log.info("%s: resuming after epoch %d", workdir, done)
  done = done or 0

  summary = {
    "status": "running",
    "epoch": done,
    "stopped_early": False,
    "num_params": models.count_params(state.params),
    "flops_per_example": sum(s.flops for s in specs),
    "num_train_examples": len(data.train_labels),
    "num_test_examples": len(data.test_labels),
    "data_source": data.source,
    **provenance.environment(),
    "code": code,
  }
  log.info("data %s: train %s, test %s, %d classes; backend %s (%s)", data.source,
               data.train_images.shape, data.test_images.shape, data.num_classes,
               summary["backend"], summary["device"])  # fmt: skip

  program = EpochProgram(state, data, config, shuffle_rng)
  summary["compile_seconds"] = program.compile_seconds

  try:
    for epoch in range(done + 1, config["num_epochs"] + 1):
      bar = run_log.progress_bar(program.num_steps, f"epoch {epoch}/{config['num_epochs']}")
      epoch_start = time.perf_counter()
      state, train = program.train_epoch(state, epoch, bar)
      epoch_seconds = time.perf_counter() - epoch_start
      bar.close()
      if not math.isfinite(train["loss"]):
        raise TrainingError(
          f"NaN/inf training loss in epoch {epoch}; the run is stopped (learning_rate="
          f"{config['learning_rate']}, optimizer={config['optimizer']}: try a smaller learning rate)"
        )
      eval_start = time.perf_counter()
      test = program.evaluate(state)
      record = {
        "epoch": epoch,
        **{f"train_{k}": v for k, v in train.items()},
        **{f"test_{k}": v for k, v in test.items()},
        "epoch_seconds": epoch_seconds,
        "examples_per_second": program.num_train / epoch_seconds,
        "eval_seconds": time.perf_counter() - eval_start,
        "code": code["source"],
      }
      run_log.write_metrics(record)
      history.append(record)
      if config["checkpoint"]:
        checkpoints.save(workdir, epoch, state)
      log.info("epoch %d: train loss %.4f acc %.4f | test loss %.4f acc %.4f | %.2f s (%.0f ex/s)",
                   epoch, train["loss"], train["accuracy"], test["loss"], test["accuracy"],
                   epoch_seconds, record["examples_per_second"])  # fmt: skip
      summary["epoch"] = epoch
      stop_at = config.get("stop_at")
      if stop_at is not None and train["accuracy"] >= stop_at:
        summary["stopped_early"] = True
        summary["stop_reason"] = f"train accuracy {train['accuracy']:.4f} reached stop_at={stop_at} after epoch {epoch}"
        log.info("Stopping: %s", summary["stop_reason"])
        break
  except TrainingError as e:
    summary.update(status="failed", error=str(e), total_seconds=time.perf_counter() - start_time)
    run_log.write_summary(summary)
    run_log.close()
    raise

  summary.update(logs.history_summary(history))
  summary.update(status="completed", total_seconds=time.perf_counter() - start_time)
  run_log.write_summary(summary)
  run_log.close()
  return summary
