"""Training: ONE loop (:func:`fit`) for a run and for seeds trained together; ``train_and_evaluate``.

:func:`fit` trains configs that differ only in their seed (and learning rate), each written to its own run directory
(``convnet.rundir``: config, metrics, summary, checkpoints, TensorBoard), through one compiled
program (``convnet.programs``: one model, or the seeds in lockstep). One place for everything a run
does around its epochs, so that a single run and a group behave the same:

* the same-run check and "already finished" per directory; the workdirs' locks;
* resume: each directory's newest checkpoint that restores (a damaged one is moved aside for the one
  before it, with a warning); a group goes on from the last epoch all of its members have;
* records: a metrics line per epoch, TensorBoard rewritten from metrics on every resume, a summary;
* stop rules: ``stop_at`` and a NaN or diverged loss, per member (a failed member's summary says
  ``status: "failed"``; the others train on);
* Ctrl-C at safe points (between compiled calls, after an epoch's records and checkpoints): it ends
  with ``Interrupted`` naming the last epoch recorded.

:func:`train_and_evaluate` is :func:`fit` for one config (the Flax examples' entry point): it returns
summary.json's dict and raises TrainingError for a NaN or diverged loss.
"""

from collections.abc import Mapping, Sequence
import contextlib
import logging
import math
import time
from typing import Any

import ml_collections

from convnet import configuration, devices, inference, input_pipeline, interrupts, models, numerics, programs, splits
from convnet.errors import Interrupted, TrainingError
from convnet.rundir import checkpoints, locks, provenance, runlog

log = logging.getLogger("convnet")
LOG_NAMES = {"validation_accuracy": "val acc", "test_loss": "test loss", "test_accuracy": "acc"}  # an epoch's line
TOGETHER = ("seed", "learning_rate")  # the fields in which configs trained as one program may differ
DIVERGED_FACTOR = 10  # an epoch's mean loss above 10 x ln(num_classes) (an untrained net's loss) has diverged


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


def run_facts(
  num_params: int, data: input_pipeline.Dataset, specs, mesh, code: Mapping[str, Any], epoch: int, config=None
) -> dict[str, Any]:
  """summary.json's fields of a run that is starting (``status: running``) after ``epoch`` epochs."""
  return {
    "status": "running",
    "epoch": epoch,
    "resumed_from": epoch,  # epochs already trained when this entry started (0: trained in one go)
    "stopped_early": False,
    "num_params": num_params,
    "flops_per_example": sum(s.flops for s in specs),
    "num_classes": data.num_classes,
    **splits.facts(data),
    "data_source": data.source,
    **provenance.environment(),
    **devices.placement(mesh),
    **numerics.record(config or {}),
    "code": code,
  }


def epoch_record(epoch, train, scored, epoch_seconds, eval_seconds, num_train, code) -> dict[str, Any]:
  """An epoch's metrics.jsonl line: train metrics, each evaluation split's (``validation_accuracy``,
  ``test_loss``, ...: ``Program.evaluate``), timings, and the code that ran it."""
  return {
    "epoch": epoch,
    **{f"train_{k}": v for k, v in train.items()},
    **scored,
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
  Ctrl-C raises Interrupted. The run holds ``workdir``'s lock (``convnet.rundir.locks``) unless ``lock``
  is False (a caller that holds a lock covering it); ``lock_wait`` seconds are given to a holder to let go.
  """
  (summary,) = fit([config], [workdir], lock=lock, lock_wait=lock_wait)
  if summary.get("status") == "failed":
    raise TrainingError(summary.get("error", f"{workdir}: training failed"))
  return summary


def fit(
  configs: Sequence[ml_collections.ConfigDict | Mapping[str, Any]],
  workdirs: Sequence[str],
  *,
  lock: bool = True,
  lock_wait: float = 0.0,
) -> list[dict[str, Any]]:
  """Trains configs that differ only in ``seed`` and ``learning_rate`` as one program, each in its workdir;
  their summaries.

  A member already finished is not trained again (its summary is returned); a NaN or diverged loss
  fails that member only (its summary has ``status: "failed"`` and ``error``); ``stop_at`` stops each
  member on its own. Timings of a group (``epoch_seconds``) are the whole group's, marked by
  ``seeds_together``. See the module docstring for resume, records and Ctrl-C.
  """
  configs = [configuration.to_dict(c) for c in configs]
  shared = [{k: v for k, v in c.items() if k not in TOGETHER} for c in configs]
  if not configs or len(configs) != len(workdirs) or any(other != shared[0] for other in shared[1:]):
    raise ValueError(f"fit trains configs that differ only in {' and '.join(TOGETHER)}, one workdir each")
  for config in configs:
    configuration.check_config(config)
  devices.check_backend(configs[0].get("backend"))  # a bad backend or device count: one error, nothing written
  devices.make_mesh(configs[0].get("num_devices"))
  writer = devices.is_writer()  # of several processes (many hosts), only process 0 writes and locks
  with contextlib.ExitStack() as stack:
    if lock and writer:
      for workdir in workdirs:
        stack.enter_context(locks.hold(workdir, lock_wait))
    run_logs = [
      stack.enter_context(contextlib.closing(runlog.RunLog(w, tensorboard=c["tensorboard"], writes=writer,
                                                           progress=c["progress"] and i == 0)))
      for i, (c, w) in enumerate(zip(configs, workdirs, strict=True))
    ]  # fmt: skip
    summaries: dict[int, dict[str, Any]] = {}
    for position, (config, workdir, run_log) in enumerate(zip(configs, workdirs, run_logs, strict=True)):
      configuration.check_same_run(run_log.read_config(), config, workdir)
      previous = run_log.read_summary()
      if runlog.is_finished(previous, config):
        log.info("%s: already finished (%d epochs); not training again", workdir, previous["epoch"])
        summaries[position] = previous
    todo = [i for i in range(len(configs)) if i not in summaries]
    if todo:
      members = [_Member(configs[i], workdirs[i], run_logs[i]) for i in todo]
      try:
        with interrupts.deferred():  # Ctrl-C stops the run between compiled calls (interrupts.check)
          trained = _fit(members)
      except KeyboardInterrupt:
        done = min((checkpoints.last_recorded_epoch(m.run_log) for m in members), default=0)
        where = ", ".join(str(m.workdir) for m in members)
        raise Interrupted(f"interrupted after epoch {done} of {where}; re-run the same command to resume") from None
      summaries.update(zip(todo, trained, strict=True))
    return [summaries[i] for i in range(len(configs))]


class _Member:
  """One model of a fit: its config, its directory and what it has recorded so far."""

  def __init__(self, config: dict[str, Any], workdir: str, run_log: runlog.RunLog):
    self.config, self.workdir, self.run_log = config, workdir, run_log
    self.history: list[dict[str, Any]] = []
    self.summary: dict[str, Any] = {}
    self.saver: checkpoints.Saver | None = None

  @property
  def active(self) -> bool:
    return self.summary.get("status") == "running" and not self.summary.get("stopped_early")


def _fit(members: list[_Member]) -> list[dict[str, Any]]:
  start_time = time.perf_counter()
  config = members[0].config
  data = input_pipeline.get_datasets(config["dataset"])
  specs = models.layer_specs(configuration.model_kwargs(config, data.num_classes), data.image_shape)
  code = provenance.code_record(models.layer_ops(specs))
  program = programs.build(config, data, [m.config["seed"] for m in members],
                           [m.config["learning_rate"] for m in members])  # fmt: skip
  for member in members:
    member.run_log.write_config(member.config, code)
  done = checkpoints.resume(members, program)
  params = program.states()[0].params  # the members share one architecture: its size once
  num_params = models.count_params(params)
  param_bytes = inference.param_bytes(params)  # what the network weighs, as stored and exported
  together = {"seeds_together": len(members)} if len(members) > 1 else {}
  for member in members:
    member.history = member.run_log.keep_metrics_through(done)
    member.run_log.rewrite_tensorboard(member.history)  # every kept epoch once, whatever a kill left in the events
    member.summary = {
      **run_facts(num_params, data, specs, program.mesh, code, epoch=done, config=config),
      "compile_seconds": program.compile_seconds,
      "param_bytes": param_bytes,
      **together,
    }
  log.info("data %s: %s; %d classes; backend %s (%s)", data.source, splits.describe(data), data.num_classes,
           members[0].summary["backend"], members[0].summary["device"])  # fmt: skip

  asynchronous = checkpoints.asynchronous_here()
  for member in members:
    member.saver = checkpoints.Saver(member.workdir, asynchronous)
  try:
    for epoch in range(done + 1, config["num_epochs"] + 1):
      if not any(m.active for m in members):
        break
      bar = members[0].run_log.progress_bar(program.num_steps, f"epoch {epoch}/{config['num_epochs']}")
      epoch_start = time.perf_counter()
      trained = program.train_epoch(epoch, bar)
      epoch_seconds = time.perf_counter() - epoch_start
      bar.close()
      eval_start = time.perf_counter()
      tested = program.evaluate()
      eval_seconds = time.perf_counter() - eval_start
      states = program.states() if config["checkpoint"] else None
      for i, member in enumerate(members):
        if member.active:
          _record_epoch(member, epoch, trained[i], tested[i], epoch_seconds, eval_seconds, program.num_train,
                        data.num_classes, states[i] if states else None, start_time)  # fmt: skip
      interrupts.check()
      shown = [(trained, "loss"), (trained, "accuracy")] + [(tested, k) for k in LOG_NAMES if k in tested[0]]
      log.info("epoch %d: train loss %s acc %s |" + "".join(f" {LOG_NAMES[k]} %s" for _, k in shown[2:])
               + " | %.2f s (%.0f ex/s)", epoch, *(" ".join(f"{m[k]:.4f}" for m in ms) for ms, k in shown),
               epoch_seconds, program.num_train / epoch_seconds)  # fmt: skip
  finally:
    for member in members:  # every checkpoint written before a summary says "completed"
      member.saver.close()

  model = models.ConvNet(**configuration.model_kwargs(config, data.num_classes))
  here = devices.first_local(program.mesh)  # inference is measured on one device of this process
  for member, state in zip(members, program.states(), strict=True):
    if member.summary["status"] != "failed":
      member.summary.update(runlog.history_summary(member.history))
      member.summary.update(inference.measure(model, state.params, data.image_shape, config, here))
      member.summary.update(status="completed", total_seconds=time.perf_counter() - start_time)
      member.run_log.write_summary(member.summary)
  return [m.summary for m in members]


def _record_epoch(member, epoch, train, test, epoch_seconds, eval_seconds, num_train, num_classes, state, start):
  """One member's epoch: the loss check, its metrics line, its checkpoint, and the stop rule."""
  try:
    check_loss(train["loss"], epoch, num_classes, member.config)
  except TrainingError as e:
    member.summary.update(status="failed", error=str(e), total_seconds=time.perf_counter() - start)
    member.run_log.write_summary(member.summary)
    log.warning("%s: %s", member.workdir, e)
    return
  record = epoch_record(epoch, train, test, epoch_seconds, eval_seconds, num_train, member.summary["code"])
  member.run_log.write_metrics(record)
  member.history.append(record)
  if state is not None:
    member.saver.save(epoch, state)
  member.summary["epoch"] = epoch
  reason = stop_reason(member.config, train, epoch)
  if reason is not None:
    member.summary.update(stopped_early=True, stop_reason=reason)
    log.info("%s: stopping: %s", member.workdir, reason)
