"""Training and evaluation: the train state, the compiled steps, the epoch loop, ``train_and_evaluate``.

The dataset lives on the device as uint8 arrays. Each epoch draws a permutation on the device and
runs its steps as a ``lax.scan`` inside one compiled call (``config.steps_per_call`` steps per call;
0 = the whole epoch), with the train state donated; the host reads the metrics once per call when
a progress bar is shown, else once per epoch. A last partial batch is kept and masked, train and
test alike, so every example counts and the whole test set is scored.
"""

from collections.abc import Mapping
import functools
import logging
import math
import os
import platform
import statistics
import time
from typing import Any

import flax
from flax.training import train_state
import jax
from jax import lax
import jax.numpy as jnp
import jaxlib
import ml_collections
import numpy as np
import optax

import convnet
from convnet import checkpoints, input_pipeline, logs, models
from convnet.errors import ConfigError, TrainingError

log = logging.getLogger("convnet")
OPTIMIZERS = ("adam", "sgd")
# Config fields that may change between a run and its resumption (they do not change the result).
RESUMABLE_CHANGES = frozenset(
  {"num_epochs", "stop_at", "steps_per_call", "eval_batch_size", "checkpoint", "tensorboard", "progress"}
)


class TrainState(train_state.TrainState):
  pass


def check_config(config: Mapping[str, Any]) -> None:
  """Raises ConfigError for a training value that is not allowed (the model is checked with the data)."""

  def need_int(name: str, minimum: int) -> None:
    value = config[name]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
      raise ConfigError(f"{name}={value!r} is not allowed; use an int >= {minimum}")

  need_int("num_epochs", 1)
  need_int("batch_size", 1)
  need_int("eval_batch_size", 1)
  need_int("steps_per_call", 0)
  need_int("seed", 0)
  if config["optimizer"] not in OPTIMIZERS:
    raise ConfigError(f"optimizer={config['optimizer']!r} is not allowed; use one of {OPTIMIZERS}")
  lr = config["learning_rate"]
  if not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
    raise ConfigError(f"learning_rate={lr!r} is not allowed; use a finite number > 0")
  stop_at = config.get("stop_at")
  if stop_at is not None and not 0 < stop_at <= 1:
    raise ConfigError(f"stop_at={stop_at!r} is not allowed; use a train accuracy in (0, 1] or None")


def make_optimizer(config: Mapping[str, Any]) -> optax.GradientTransformation:
  if config["optimizer"] == "sgd":
    return optax.sgd(config["learning_rate"], momentum=config.get("momentum") or None)
  return optax.adam(config["learning_rate"])


def model_kwargs(config: Mapping[str, Any], num_classes: int) -> dict[str, Any]:
  """``config.model`` with the dataset's number of classes; ConvNet(**model_kwargs(...))."""
  kwargs = dict(config["model"])
  if kwargs.setdefault("num_classes", num_classes) != num_classes:
    raise ConfigError(f"model.num_classes={kwargs['num_classes']} but the dataset has {num_classes} classes")
  return kwargs


def create_train_state(rng: jax.Array, config: Mapping[str, Any], image_shape, num_classes: int) -> TrainState:
  """A fresh TrainState; checks the config's shapes first (ConfigError names the layer)."""
  kwargs = model_kwargs(config, num_classes)
  models.layer_specs(kwargs, image_shape)
  model = models.ConvNet(**kwargs)
  params = model.init(rng, jnp.zeros((1, *image_shape), jnp.uint8))["params"]
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


def _train_step(state, images, labels, mask):
  def loss_fn(params):
    logits = state.apply_fn({"params": params}, images)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return jnp.sum(losses * mask) / jnp.maximum(jnp.sum(mask), 1.0), logits

  (_, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  return state.apply_gradients(grads=grads), compute_metrics(logits, labels, mask)


@jax.jit
def train_step(state: TrainState, batch: Mapping[str, jax.Array]) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer step on ``batch`` (``image`` uint8 NHWC, ``label``, optional ``mask``)."""
  mask = batch.get("mask", jnp.ones(batch["label"].shape, jnp.float32))
  return _train_step(state, batch["image"], batch["label"], mask)


@jax.jit
def eval_step(state: TrainState, batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
  mask = batch.get("mask", jnp.ones(batch["label"].shape, jnp.float32))
  return compute_metrics(state.apply_fn({"params": state.params}, batch["image"]), batch["label"], mask)


def _sum_tree(tree):
  return jax.tree_util.tree_map(lambda x: jnp.sum(x, axis=0), tree)


def _add_all(metrics_list):
  return functools.reduce(lambda a, b: jax.tree_util.tree_map(jnp.add, a, b), metrics_list)


@functools.partial(jax.jit, donate_argnums=0)
def train_steps(state, images, labels, batch_indices, batch_mask):
  """Scans train steps over rows of ``batch_indices`` into the device-resident data; summed metrics."""

  def body(state, xs):
    indices, mask = xs
    return _train_step(state, images[indices], labels[indices], mask)

  state, metrics = lax.scan(body, state, (batch_indices, batch_mask))
  return state, _sum_tree(metrics)


@jax.jit
def evaluate_batches(state, images, labels, batch_indices, batch_mask):
  def body(_, xs):
    indices, mask = xs
    logits = state.apply_fn({"params": state.params}, images[indices])
    return None, compute_metrics(logits, labels[indices], mask)

  return _sum_tree(lax.scan(body, None, (batch_indices, batch_mask))[1])


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


def evaluate(state: TrainState, images, labels, batch_size: int = 500) -> dict[str, float]:
  """Loss and accuracy over every example of ``images`` (uint8 NHWC) — nothing dropped."""
  indices, mask = batch_layout(len(labels), batch_size)
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
      jnp.asarray(a) for a in batch_layout(len(data.test_labels), config["eval_batch_size"])
    )
    start = time.perf_counter()
    key = jax.random.fold_in(shuffle_rng, 0)
    self.shuffle_fn = shuffled_batches.lower(key, self.num_train, config["batch_size"]).compile()
    indices, mask = self.shuffle_fn(key)
    self.step_fns = {}
    for begin, end in self.chunks:
      if end - begin not in self.step_fns:
        self.step_fns[end - begin] = train_steps.lower(
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
    chunk_metrics = []
    for begin, end in self.chunks:
      state, metrics = self.step_fns[end - begin](
        state, self.train_images, self.train_labels, indices[begin:end], mask[begin:end]
      )
      chunk_metrics.append(metrics)
      if bar is not None and not bar.disable:
        seen = summarize(_add_all(chunk_metrics))
        bar.set_postfix(loss=f"{seen['loss']:.4f}", accuracy=f"{seen['accuracy']:.4f}", refresh=False)
        bar.update(end - begin)
    return state, summarize(jax.device_get(_add_all(chunk_metrics)))

  def evaluate(self, state: TrainState) -> dict[str, float]:
    """Loss and accuracy over the whole test set."""
    return summarize(
      jax.device_get(self.eval_fn(state, self.test_images, self.test_labels, self.eval_indices, self.eval_mask))
    )


def _chunks(num_steps: int, steps_per_call: int) -> list[tuple[int, int]]:
  size = num_steps if steps_per_call <= 0 else min(steps_per_call, num_steps)
  return [(start, min(start + size, num_steps)) for start in range(0, num_steps, size)]


def _cpu_name() -> str:
  try:
    for line in open("/proc/cpuinfo"):
      if line.startswith("model name"):
        return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def _environment() -> dict[str, Any]:
  import orbax.checkpoint as ocp

  device = jax.devices()[0]
  return {
    "backend": jax.default_backend(),
    "device": f"{device.platform}:{device.device_kind}",
    "num_devices": jax.device_count(),
    "machine": f"{_cpu_name()}, {os.cpu_count()} cores",
    "versions": {
      "convnet": convnet.__version__,
      "python": platform.python_version(),
      "jax": jax.__version__,
      "jaxlib": jaxlib.__version__,
      "flax": flax.__version__,
      "optax": optax.__version__,
      "orbax": getattr(ocp, "__version__", "?"),
    },
  }


def _check_same_run(previous: Mapping[str, Any] | None, current: Mapping[str, Any], workdir) -> None:
  if previous is None:
    return
  flat_prev = logs.flatten_dict(previous)
  flat_curr = logs.flatten_dict(logs.json_safe(current))
  changed = sorted(
      k for k in set(flat_prev) | set(flat_curr)
      if k.split(".")[0] not in RESUMABLE_CHANGES and flat_prev.get(k) != flat_curr.get(k)
  )  # fmt: skip
  if changed:
    k = changed[0]
    raise ConfigError(
      f"{workdir} holds a run with a different config ({k}: {flat_prev.get(k)!r} there, "
      f"{flat_curr.get(k)!r} now); use another --workdir"
    )


def _is_finished(summary: Mapping[str, Any] | None, num_epochs: int) -> bool:
  return (
    bool(summary)
    and summary.get("status") == "completed"
    and (summary.get("stopped_early") or summary.get("epoch", 0) >= num_epochs)
  )


def train_and_evaluate(config: ml_collections.ConfigDict | Mapping[str, Any], workdir: str) -> dict[str, Any]:
  """Trains ``config`` in ``workdir`` (resuming from its last checkpoint) and returns summary.json's dict.

  A run that already finished is not trained again: its summary is returned. A NaN loss raises
  TrainingError after writing ``status: "failed"``; bad config values raise ConfigError.
  """
  start_time = time.perf_counter()
  config_dict = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)
  check_config(config_dict)
  run_log = logs.RunLog(workdir, tensorboard=config_dict["tensorboard"], progress=config_dict["progress"])
  _check_same_run(run_log.read_config(), config_dict, workdir)
  previous = run_log.read_summary()
  if _is_finished(previous, config_dict["num_epochs"]):
    log.info("%s: already finished (%d epochs); not training again", workdir, previous["epoch"])
    return previous

  data = input_pipeline.get_datasets(config_dict["dataset"])
  specs = models.layer_specs(model_kwargs(config_dict, data.num_classes), data.image_shape)
  init_rng, shuffle_rng = jax.random.split(jax.random.PRNGKey(config_dict["seed"]))
  state = create_train_state(init_rng, config_dict, data.image_shape, data.num_classes)
  run_log.write_config(config_dict)

  done = checkpoints.latest_epoch(workdir) if config_dict["checkpoint"] else None
  history = run_log.keep_metrics_through(done or 0)
  if done is not None:
    state, done = checkpoints.restore(workdir, state)
    log.info("%s: resuming after epoch %d", workdir, done)
  done = done or 0

  summary = {
    "status": "running",
    "epoch": done,
    "num_params": models.count_params(state.params),
    "flops_per_example": sum(s.flops for s in specs),
    "num_train_examples": len(data.train_labels),
    "num_test_examples": len(data.test_labels),
    "data_source": data.source,
    **_environment(),
  }
  log.info("data %s: train %s, test %s, %d classes; backend %s (%s)", data.source,
               data.train_images.shape, data.test_images.shape, data.num_classes,
               summary["backend"], summary["device"])  # fmt: skip

  program = EpochProgram(state, data, config_dict, shuffle_rng)
  summary["compile_seconds"] = program.compile_seconds

  try:
    for epoch in range(done + 1, config_dict["num_epochs"] + 1):
      bar = run_log.progress_bar(program.num_steps, f"epoch {epoch}/{config_dict['num_epochs']}")
      epoch_start = time.perf_counter()
      state, train = program.train_epoch(state, epoch, bar)
      epoch_seconds = time.perf_counter() - epoch_start
      bar.close()
      if not math.isfinite(train["loss"]):
        raise TrainingError(
          f"NaN/inf training loss in epoch {epoch}; the run is stopped (learning_rate="
          f"{config_dict['learning_rate']}, optimizer={config_dict['optimizer']}: try a smaller learning rate)"
        )
      eval_start = time.perf_counter()
      test = program.evaluate(state)
      record = {
        "epoch": epoch,
        "train_loss": train["loss"],
        "train_accuracy": train["accuracy"],
        "test_loss": test["loss"],
        "test_accuracy": test["accuracy"],
        "epoch_seconds": epoch_seconds,
        "examples_per_second": program.num_train / epoch_seconds,
        "eval_seconds": time.perf_counter() - eval_start,
      }
      run_log.write_metrics(record)
      history.append(record)
      if config_dict["checkpoint"]:
        checkpoints.save(workdir, epoch, state)
      log.info("epoch %d: train loss %.4f acc %.4f | test loss %.4f acc %.4f | %.2f s (%.0f ex/s)",
                   epoch, train["loss"], train["accuracy"], test["loss"], test["accuracy"],
                   epoch_seconds, record["examples_per_second"])  # fmt: skip
      summary["epoch"] = epoch
      stop_at = config_dict.get("stop_at")
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

  final = history[-1] if history else {}
  summary.update(
    {k: v for k, v in final.items() if k not in ("epoch", "epoch_seconds", "examples_per_second", "eval_seconds")}
  )
  if history:
    summary["epoch_seconds"] = statistics.median(r["epoch_seconds"] for r in history)
    summary["examples_per_second"] = statistics.median(r["examples_per_second"] for r in history)
    summary["train_seconds"] = sum(r["epoch_seconds"] for r in history)
  summary.update(status="completed", total_seconds=time.perf_counter() - start_time)
  summary.setdefault("stopped_early", False)
  run_log.write_summary(summary)
  run_log.close()
  return summary
