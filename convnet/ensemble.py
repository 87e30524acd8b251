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

:func:`train_seeds` is ``train.train_and_evaluate`` for several seeds at once (a sweep's
``seeds_together``): each seed is still written as its own run directory (config, metrics, summary,
checkpoints, TensorBoard), so the sweep records one result line per seed, and a seed's directory
resumes alone or together.
"""

from collections.abc import Mapping, Sequence
import contextlib
import logging
import time
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from convnet import (
  batching,
  checkpoints,
  configuration,
  devices,
  input_pipeline,
  locks,
  logs,
  models,
  provenance,
  steps,
  train,
)
from convnet.errors import TrainingError

log = logging.getLogger("convnet")


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


def _stacked(trees: Sequence[Any]) -> Any:
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def _unstacked(tree: Any, count: int) -> list[Any]:
  return [jax.tree.map(lambda leaf, i=i: leaf[i], tree) for i in range(count)]


def train_seeds(
  configs: Sequence[Mapping[str, Any]], workdirs: Sequence[str], *, lock_wait: float = 0.0
) -> list[dict[str, Any]]:
  """Trains configs that differ only in ``seed`` as one :class:`SeedsProgram`, each written to its workdir.

  Returns each seed's summary (as ``train.train_and_evaluate`` would): a seed already finished is not
  trained again, a NaN or diverged loss fails that seed only (``status: "failed"``, ``error``), and
  ``stop_at`` stops each seed on its own. The group resumes from the last epoch every seed has a
  checkpoint of. Timings (``epoch_seconds``) are the whole group's, marked by ``seeds_together``.
  """
  configs = [configuration.to_dict(c) for c in configs]
  shared = [{k: v for k, v in c.items() if k != "seed"} for c in configs]
  if any(other != shared[0] for other in shared[1:]) or len(configs) != len(workdirs):
    raise ValueError("train_seeds trains configs that differ only in their seed, one workdir each")
  for config in configs:
    configuration.check_config(config)
  with contextlib.ExitStack() as stack:
    for workdir in workdirs:
      stack.enter_context(locks.hold(workdir, lock_wait))
    run_logs = [stack.enter_context(contextlib.closing(_run_log(c, w))) for c, w in zip(configs, workdirs, strict=True)]
    summaries = {}
    for position, (config, workdir, run_log) in enumerate(zip(configs, workdirs, run_logs, strict=True)):
      configuration.check_same_run(run_log.read_config(), config, workdir)
      previous = run_log.read_summary()
      if logs.is_finished(previous, config):
        summaries[position] = previous
    todo = [i for i in range(len(configs)) if i not in summaries]
    if todo:
      summaries.update(_train_together([configs[i] for i in todo], [workdirs[i] for i in todo],
                                       [run_logs[i] for i in todo], todo))  # fmt: skip
    return [summaries[i] for i in range(len(configs))]


def _run_log(config: Mapping[str, Any], workdir: str) -> logs.RunLog:
  return logs.RunLog(workdir, tensorboard=config["tensorboard"], progress=False)


def _train_together(configs, workdirs, run_logs, positions) -> dict[int, dict[str, Any]]:
  start_time = time.perf_counter()
  config = configs[0]
  devices.check_backend(config.get("backend"))
  data = input_pipeline.get_datasets(config["dataset"])
  specs = models.layer_specs(configuration.model_kwargs(config, data.num_classes), data.image_shape)
  code = provenance.code_record(models.layer_ops(specs))
  seeds = [c["seed"] for c in configs]
  program = SeedsProgram(config, data, seeds)
  count = len(seeds)

  done = 0
  if config["checkpoint"]:
    saved = [set(checkpoints.epochs(w)) for w in workdirs]
    common = set.intersection(*saved)
    done = max(common) if common else 0
    for workdir in workdirs:  # a seed ahead of the others goes back with them (its epochs come out the same)
      checkpoints.discard_after(workdir, done)
    if done:
      template = _unstacked(program.states, count)
      restored = [checkpoints.restore(w, t, epoch=done)[0] for w, t in zip(workdirs, template, strict=True)]
      program.states = devices.put(_stacked(restored), devices.leading_sharding(program.mesh))
      log.info("seeds %s: resuming after epoch %d", seeds, done)
  one = _unstacked(program.states, count)[0]
  summaries, histories = [], []
  for config, run_log in zip(configs, run_logs, strict=True):
    run_log.write_config(config, code)
    history = run_log.keep_metrics_through(done)
    run_log.rewrite_tensorboard(history)
    histories.append(history)
    summary = train.run_facts(one, data, specs, program.mesh, code, epoch=done)
    summaries.append({**summary, "compile_seconds": program.compile_seconds, "seeds_together": count})
  active = list(range(count))
  for epoch in range(done + 1, config["num_epochs"] + 1):
    if not active:
      break
    epoch_start = time.perf_counter()
    trained = program.train_epoch(epoch)
    epoch_seconds = time.perf_counter() - epoch_start
    eval_start = time.perf_counter()
    tested = program.evaluate()
    eval_seconds = time.perf_counter() - eval_start
    states = _unstacked(program.states, count) if config["checkpoint"] else None
    for i in list(active):
      try:
        train.check_loss(trained[i]["loss"], epoch, data.num_classes, config)
      except TrainingError as e:
        summaries[i].update(status="failed", error=str(e), total_seconds=time.perf_counter() - start_time)
        run_logs[i].write_summary(summaries[i])
        active.remove(i)
        continue
      record = train.epoch_record(epoch, trained[i], tested[i], epoch_seconds, eval_seconds, program.num_train, code)
      run_logs[i].write_metrics(record)
      histories[i].append(record)
      if config["checkpoint"]:
        checkpoints.save(workdirs[i], epoch, states[i])
      summaries[i]["epoch"] = epoch
      reason = train.stop_reason(config, trained[i], epoch)
      if reason is not None:
        summaries[i].update(stopped_early=True, stop_reason=reason)
        active.remove(i)
    log.info("epoch %d, seeds %s: test accuracy %s | %.2f s", epoch, seeds,
             " ".join(f"{t['accuracy']:.4f}" for t in tested), epoch_seconds)  # fmt: skip
  for i, summary in enumerate(summaries):
    if summary["status"] != "failed":
      summary.update(logs.history_summary(histories[i]))
      summary.update(status="completed", total_seconds=time.perf_counter() - start_time)
      run_logs[i].write_summary(summary)
  return dict(zip(positions, summaries, strict=True))
