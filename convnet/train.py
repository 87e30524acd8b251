"""Training: the epoch program over device-resident data, and ``train_and_evaluate``.

The dataset lives on the device as uint8 arrays. Each epoch draws a permutation on the device and
runs its steps (``convnet.steps``) as a ``lax.scan`` inside compiled calls (``config.steps_per_call``
steps per call; 0 = the whole epoch), with the train state donated; the host reads the metrics once
per call when a progress bar is shown, else once per epoch. A last partial batch is kept and masked,
train and test alike, so every example counts and the whole test set is scored.
"""

from collections.abc import Mapping
import contextlib
import logging
import math
import time
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
import ml_collections

from convnet import (
  batching,
  checkpoints,
  configuration,
  devices,
  input_pipeline,
  interrupts,
  locks,
  logs,
  models,
  provenance,
  steps,
)
from convnet.errors import Interrupted, TrainingError

log = logging.getLogger("convnet")
DIVERGED_FACTOR = 10  # an epoch's mean loss above 10 x ln(num_classes) (an untrained net's loss) has diverged


class EpochProgram:
  """One config's compiled programs over device-resident data: shuffle, train an epoch, evaluate.

  The programs run on ``mesh`` (default: ``config.num_devices`` local devices, ``convnet.devices``):
  the data and the state replicated, every batch's rows split across the devices. Everything is
  compiled in the constructor (``compile_seconds``), so that epoch times exclude compilation.
  ``train_and_evaluate`` and ``convnet.benchmark`` both run epochs through it.
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
    devices.check_divisible(self.mesh, {k: config[k] for k in ("batch_size", "eval_batch_size")})
    self.replicated, rows = devices.replicated(self.mesh), devices.batch_sharding(self.mesh)
    self.shuffle_rng = shuffle_rng
    self.train_images, self.train_labels, self.test_images, self.test_labels = devices.put(
      (data.train_images, data.train_labels, data.test_images, data.test_labels), self.replicated
    )
    self.num_train = len(data.train_labels)
    self.num_steps = -(-self.num_train // config["batch_size"])
    self.chunks = _chunks(self.num_steps, config["steps_per_call"])
    self.eval_indices, self.eval_mask = devices.put(
      batching.batch_layout(len(data.test_labels), config["eval_batch_size"]), rows
    )
    state = self.place(state)
    start = time.perf_counter()
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
    self.eval_fn = (
      jax.jit(steps.scan_metrics, out_shardings=self.replicated)
      .lower(state, self.test_images, self.test_labels, self.eval_indices, self.eval_mask)
      .compile()
    )
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
        seen = steps.summarize(total)
        bar.set_postfix(loss=f"{seen['loss']:.4f}", accuracy=f"{seen['accuracy']:.4f}", refresh=False)
        bar.update(end - begin)
    return state, steps.summarize(jax.device_get(total))

  def evaluate(self, state: steps.TrainState) -> dict[str, float]:
    """Loss and accuracy over the whole test set."""
    return steps.summarize(
      jax.device_get(self.eval_fn(state, self.test_images, self.test_labels, self.eval_indices, self.eval_mask))
    )


def _chunks(num_steps: int, steps_per_call: int) -> list[tuple[int, int]]:
  size = num_steps if steps_per_call <= 0 else min(steps_per_call, num_steps)
  return [(start, min(start + size, num_steps)) for start in range(0, num_steps, size)]


def check_loss(loss: float, epoch: int, num_classes: int, config: Mapping[str, Any]) -> None:
  """TrainingError for a NaN/inf epoch loss, or one far above an untrained network's (diverged)."""
  limit = DIVERGED_FACTOR * math.log(num_classes)
  if math.isfinite(loss) and loss <= limit:
    return
  what = (
    "NaN/inf training loss"
    if not math.isfinite(loss)
    else f"training diverged: loss {loss:.4g} > {limit:.1f} ({DIVERGED_FACTOR} x ln {num_classes} classes)"
  )
  raise TrainingError(
    f"{what} in epoch {epoch}; the run is stopped (learning_rate={config['learning_rate']}, "
    f"optimizer={config['optimizer']}: try a smaller learning rate)"
  )


def run_facts(state, data: input_pipeline.Dataset, specs, mesh, code: Mapping[str, Any], epoch: int) -> dict[str, Any]:
  """summary.json's fields of a run that is starting (``status: running``) after ``epoch`` epochs."""
  return {
    "status": "running",
    "epoch": epoch,
    "resumed_from": epoch,  # epochs already trained when this entry started (0: trained in one go)
    "stopped_early": False,
    "num_params": models.count_params(state.params),
    "flops_per_example": sum(s.flops for s in specs),
    "num_classes": data.num_classes,
    "num_train_examples": len(data.train_labels),
    "num_test_examples": len(data.test_labels),
    "data_source": data.source,
    **provenance.environment(),
    "mesh": devices.describe(mesh),
    "code": code,
  }


def epoch_record(epoch, train, test, epoch_seconds, eval_seconds, num_train, code) -> dict[str, Any]:
  """An epoch's metrics.jsonl line: train and test metrics, timings, and the code that ran it."""
  return {
    "epoch": epoch,
    **{f"train_{k}": v for k, v in train.items()},
    **{f"test_{k}": v for k, v in test.items()},
    "epoch_seconds": epoch_seconds,
    "examples_per_second": num_train / epoch_seconds,
    "eval_seconds": eval_seconds,
    "code": code["source"],
  }


def stop_reason(config: Mapping[str, Any], train: Mapping[str, float], epoch: int) -> str | None:
  """Why training stops after ``epoch`` (its train accuracy reached ``stop_at``), or None."""
  stop_at = config.get("stop_at")
  if stop_at is not None and train["accuracy"] >= stop_at:
    return f"train accuracy {train['accuracy']:.4f} reached stop_at={stop_at} after epoch {epoch}"
  return None


def train_and_evaluate(
  config: ml_collections.ConfigDict | Mapping[str, Any], workdir: str, *, lock: bool = True, lock_wait: float = 0.0
) -> dict[str, Any]:
  """Trains ``config`` in ``workdir`` (resuming from its last checkpoint) and returns summary.json's dict.

  A run that already finished is not trained again: its summary is returned. A NaN or diverged
  loss raises TrainingError after writing ``status: "failed"``; bad config values raise ConfigError;
  Ctrl-C raises Interrupted. The run holds ``workdir``'s lock (``convnet.locks``) unless ``lock`` is
  False (a caller that holds a lock covering it); ``lock_wait`` seconds are given to a holder to let go.
  """
  config = configuration.to_dict(config)
  configuration.check_config(config)
  writer = devices.is_writer()  # of several processes (many hosts), only process 0 writes and locks
  with locks.hold(workdir, lock_wait) if lock and writer else contextlib.nullcontext():
    run_log = logs.RunLog(workdir, tensorboard=config["tensorboard"], progress=config["progress"], writes=writer)
    try:
      with interrupts.deferred():  # Ctrl-C stops the run between compiled calls (interrupts.check)
        return _train_and_evaluate(config, workdir, run_log)
    except KeyboardInterrupt:
      done = logs.read_jsonl(run_log.metrics_path)
      raise Interrupted(
        f"interrupted after epoch {done[-1]['epoch'] if done else 0} of {workdir}; re-run the same command to resume"
      ) from None
    finally:
      run_log.close()


def _train_and_evaluate(config: dict[str, Any], workdir: str, run_log: logs.RunLog) -> dict[str, Any]:
  start_time = time.perf_counter()
  configuration.check_same_run(run_log.read_config(), config, workdir)
  previous = run_log.read_summary()
  if logs.is_finished(previous, config):
    log.info("%s: already finished (%d epochs); not training again", workdir, previous["epoch"])
    return previous

  devices.check_backend(config.get("backend"))
  mesh = devices.make_mesh(config.get("num_devices"))
  devices.check_divisible(mesh, {k: config[k] for k in ("batch_size", "eval_batch_size")})
  data = input_pipeline.get_datasets(config["dataset"])
  specs = models.layer_specs(configuration.model_kwargs(config, data.num_classes), data.image_shape)
  init_rng, shuffle_rng = jax.random.split(jax.random.PRNGKey(config["seed"]))
  state = steps.create_train_state(init_rng, config, data.image_shape, data.num_classes)
  code = provenance.code_record(models.layer_ops(specs))
  run_log.write_config(config, code)

  done = 0
  if config["checkpoint"] and checkpoints.latest_epoch(workdir) is not None:
    state, done = checkpoints.restore(workdir, state)
    log.info("%s: resuming after epoch %d", workdir, done)
  history = run_log.keep_metrics_through(done)
  run_log.rewrite_tensorboard(history)  # every kept epoch once, whatever a kill left in the events

  summary = run_facts(state, data, specs, mesh, code, epoch=done)
  log.info("data %s: train %s, test %s, %d classes; backend %s (%s)", data.source,
               data.train_images.shape, data.test_images.shape, data.num_classes,
               summary["backend"], summary["device"])  # fmt: skip

  program = EpochProgram(state, data, config, shuffle_rng, mesh)
  summary["compile_seconds"] = program.compile_seconds

  try:
    for epoch in range(done + 1, config["num_epochs"] + 1):
      bar = run_log.progress_bar(program.num_steps, f"epoch {epoch}/{config['num_epochs']}")
      epoch_start = time.perf_counter()
      state, train = program.train_epoch(state, epoch, bar)
      epoch_seconds = time.perf_counter() - epoch_start
      bar.close()
      check_loss(train["loss"], epoch, data.num_classes, config)
      eval_start = time.perf_counter()
      test = program.evaluate(state)
      record = epoch_record(
        epoch, train, test, epoch_seconds, time.perf_counter() - eval_start, program.num_train, code
      )
      run_log.write_metrics(record)
      history.append(record)
      if config["checkpoint"]:
        checkpoints.save(workdir, epoch, state)
      interrupts.check()
      log.info("epoch %d: train loss %.4f acc %.4f | test loss %.4f acc %.4f | %.2f s (%.0f ex/s)",
                   epoch, train["loss"], train["accuracy"], test["loss"], test["accuracy"],
                   epoch_seconds, record["examples_per_second"])  # fmt: skip
      summary["epoch"] = epoch
      reason = stop_reason(config, train, epoch)
      if reason is not None:
        summary.update(stopped_early=True, stop_reason=reason)
        log.info("Stopping: %s", reason)
        break
  except TrainingError as e:
    run_log.write_summary(
      {**summary, "status": "failed", "error": str(e), "total_seconds": time.perf_counter() - start_time}
    )
    raise

  summary.update(logs.history_summary(history))
  summary.update(status="completed", total_seconds=time.perf_counter() - start_time)
  run_log.write_summary(summary)
  return summary
