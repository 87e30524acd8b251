"""Runs a sweep: asks its strategy what to run, hands tasks to an executor, records what comes back.

``run(config, workdir)`` expands ``config.sweep.axes`` into trials (``convnet.sweep.trials``), checks
everything that holds for every trial before anything is written (the trials' config, the sweep's
settings, the executor: a Ray cluster must answer and fit a trial), then, holding the directory's
lock, trains what is not recorded yet, trial by trial (or a configuration's seeds as one program,
``sweep.seeds_together``), each in ``DIR/trials/<name>/`` with the one training loop (``train.fit``).
The :class:`Driver` is the only writer of ``results.jsonl`` (``convnet.sweep.store``): a line per
trial, appended as the trial ends; at the end it writes the report (``convnet.results.report``).

The strategy (``convnet.sweep.strategies``) is the seam for decision rules: at each of its rungs the
driver trains every trial still running to that epoch, computes the configurations' standings from
their recorded epochs, and records the trials of the configurations the strategy stops as ``pruned``.

Re-running the same command skips recorded trials and resumes an interrupted one from its
checkpoint. A trial that failed for a reason outside it (I/O, data, a crash) runs again; one that
failed on its own (a NaN or diverged loss, a bad value) stays failed unless ``sweep.retry_failed``, or,
for a bad value, unless the sweep's config changed since; an impossible shape stays skipped.
"""

from collections.abc import Mapping, Sequence
import logging
from pathlib import Path
import time
from typing import Any

import ml_collections

from convnet import configuration, devices, inference, input_pipeline, models
from convnet.errors import ConfigError, StorageError
from convnet.results import analysis, report
from convnet.rundir import locks
from convnet.sweep import executors, progress, records, settings, strategies, trials
from convnet.sweep import store as sweep_store
from convnet.sweep.executors.base import Task
from convnet.sweep.store import SweepStore

log = logging.getLogger("convnet")
OWN_FAILURES = ("training", "config")  # failed on its own: retried only with sweep.retry_failed=True
RESULT_FIELDS = (
    "validation_accuracy", "validation_loss", "test_accuracy", "train_accuracy", "test_loss", "train_loss", "epoch", "epoch_seconds", "examples_per_second",
    "compile_seconds", "train_seconds", "num_params", "param_bytes", "flops_per_example", "num_classes", "backend", "device", "device_ids", "mesh",
    "jax_build", "matmul_precision", "deterministic", *inference.FIELDS,
    "machine", "stopped_early", "code", "code_sources", "seeds_together", "num_train_examples",
    "num_validation_examples", "num_test_examples",
)  # fmt: skip
RUNG_FIELDS = (
  "validation_accuracy",
  "validation_loss",
  "test_accuracy",
  "train_accuracy",
  "test_loss",
  "train_loss",
  "epoch_seconds",
  "examples_per_second",
)


def run(config: ml_collections.ConfigDict, workdir: str | Path) -> report.Report:
  """Runs (or resumes) the sweep in ``workdir`` (holding its lock), writes the report and returns it."""
  values = config.to_dict()
  sweep = settings.of(values)
  expanded = trials.expand(config)
  base = settings.trial_base(config).to_dict()
  configuration.check_config(base)
  if not (base.get("dataset") or {}).get("validation_size"):
    raise ConfigError(
      f"dataset.validation_size={(base.get('dataset') or {}).get('validation_size')!r} is not allowed in a sweep: its "
      "decisions read accuracy on images held out of training, never the test set; give how many to hold out, "
      "e.g. --config.dataset.validation_size=10000 (configs/sweep.py's default)"
    )
  strategy = strategies.from_settings(sweep.get("prune") or {}, values["num_epochs"], sweep.get("report") or {})
  analysis.check_rule(sweep.get("report") or {})
  settings.check_speed(sweep, base, strategies.method(sweep.get("prune") or {}))
  settings.check_tuned(sweep)
  executors.base.check_config(sweep.get("executor") or {})
  locks.check_workdir(workdir)
  store = SweepStore(workdir)
  store.check_same_sweep(values)
  driver = Driver(values, store, expanded, strategy)
  executor = None
  if driver.pending():
    if (sweep.get("executor") or {}).get("name", "local") == "local":  # every trial would fail the same way
      devices.check_backend(base.get("backend"))
      devices.make_mesh(base.get("num_devices"))
    executor = executors.start(sweep.get("executor") or {}, workdir, base.get("backend"), base.get("num_devices"))
  try:
    with locks.hold(workdir):
      store.check_same_sweep(values)
      driver = Driver(values, store, expanded, strategy)  # what is recorded now that the lock is held
      if executor is None and driver.pending():  # another process recorded less than it seemed: rare
        executor = executors.start(sweep.get("executor") or {}, workdir, base.get("backend"), base.get("num_devices"))
      store.write_config(values)
      return driver.run(executor)
  finally:
    if executor is not None:
      executor.close()


class Driver:
  """One run of a sweep over its directory: what is recorded, what runs next, and the records it adds."""

  def __init__(self, config: dict[str, Any], store: SweepStore, expanded: list[trials.Trial], strategy):
    self.config, self.store, self.trials, self.strategy = config, store, expanded, strategy
    self.by_name = {t.name: t for t in expanded}
    self.sweep = settings.of(config)
    self.executor_name = (self.sweep.get("executor") or {}).get("name", "local")
    self.done = {r["name"]: r for r in store.results()}
    self.changed = self._config_changed()
    self.recorded: set[str] = set()  # trials recorded by this run
    self.start = time.perf_counter()
    self.timings: list[tuple[float, float]] = []  # (FLOPs, seconds) of trials finished, for the ETA
    self.left: list[float] = []  # FLOPs of trials still to finish
    self.num_classes: int | None = None  # the data's, read when a strategy first needs it

  def _config_changed(self) -> bool:
    previous = self.store.config()
    if previous is None:
      return False
    try:
      configuration.check_same_run(previous, self.config, self.store.workdir, resumable={settings.GROUP})
    except ConfigError:
      return True
    return False

  def _to_run(self, trial: trials.Trial) -> bool:
    """Whether a trial trains in this run: not recorded; failed for a reason outside it, or on its own if
    asked to (or, for a bad value, if the config changed since); pruned, in a sweep without pruning
    (it trains on from its checkpoint to ``num_epochs``)."""
    record = self.done.get(trial.name)
    if record is None:
      return True
    if record.get("status") == "pruned":
      return isinstance(self.strategy, strategies.Grid)
    if record.get("status") != "failed":
      return False
    cause = record.get("cause")
    return cause not in OWN_FAILURES or bool(self.sweep.get("retry_failed")) or (cause == "config" and self.changed)

  def pending(self) -> list[trials.Trial]:
    """The trials this run may train (before the shape check); none when the strategy asks for nothing more
    (a finished race leaves the seeds it did not need unrecorded)."""
    todo = [t for t in self.trials if self._to_run(t)]
    if todo and self.strategy.next(self._board({t.name for t in todo})) is None:
      return []
    return todo

  def _board(self, to_train: set[str]) -> records.Board:
    if self.num_classes is None:
      self.num_classes = input_pipeline.peek_shape(self.config["dataset"])[1]
    return records.Board(self.store, self.trials, self.done, self.recorded, to_train, self.config["num_epochs"],
                         self.num_classes, self.sweep.get("tuned") or ())  # fmt: skip

  def _record(self, trial: trials.Trial, status: str, **fields: Any) -> dict[str, Any]:
    record = {"name": trial.name, "configuration": trial.configuration, "overrides": trial.overrides,
              "seed": trial.seed, "status": status, **fields}  # fmt: skip
    self.store.append_result(record)
    self.done[trial.name] = record
    self.recorded.add(trial.name)
    return record

  def run(self, executor: executors.Executor | None) -> report.Report:
    """Trains what is pending, rung by rung as the strategy asks; writes and returns the report."""
    image_shape, num_classes = input_pipeline.peek_shape(self.config["dataset"])
    work: list[tuple[trials.Trial, int, float]] = []  # (trial, flattened features, FLOPs per example)
    for trial in self.pending():
      try:
        specs = models.layer_specs(configuration.model_kwargs(trial.config.to_dict(), num_classes), image_shape)
      except ConfigError as e:  # impossible shapes are recorded before anything trains
        log.info("skipping %s: %s", trial.name, e)
        self._record(trial, "skipped", error=str(e))
        continue
      flatten = next(s for s in specs if s.kind == "Flatten").output_shape[0]
      work.append((trial, flatten, sum(s.flops for s in specs)))
    if not work:
      recorded = sum(1 for t in self.trials if t.name in self.done)
      log.info("all %d trials are already recorded in %s; nothing to train (the report is made anew)"
               if recorded == len(self.trials) else "%d of %d trials are recorded in %s and the strategy asks for no "
               "more; nothing to train (the report is made anew)",
               *((recorded,) if recorded < len(self.trials) else ()), len(self.trials), self.store.results_path)  # fmt: skip
      return self._report()
    self.flatten = {t.name: flatten for t, flatten, _ in work}
    racing = strategies.method(self.sweep.get("prune") or {}) == "race"  # trains only the pool seeds it needs
    log.info("%d of %d trials %s (%s executor%s, %s)", len(work), len(self.trials),
             "may run" if racing else "to run", self.executor_name,
             ", seeds together" if self.sweep.get("seeds_together") else "", self.strategy.describe())  # fmt: skip

    board = self._board({t.name for t, _, _ in work})
    by_name, previous = {item[0].name: item for item in work}, None
    while (step := self.strategy.next(board)) is not None:
      if step == previous:  # a strategy that asks again for what it was given would never end
        raise RuntimeError(f"the sweep's strategy ({self.strategy.describe()}) asked twice for {step}")
      previous = step
      for name, (epoch, verdict) in step.stop.items():
        self._record(self.by_name[name], "pruned", **self._pruned_fields(name, epoch, verdict),
                     flatten_size=self.flatten[name], executor=self.executor_name)  # fmt: skip
        log.info("pruned at epoch %d: %s (%s)", epoch, name, verdict.text())
      if step.train:
        batch = [by_name[name] for name in step.train]
        final = [item for item in batch if step.train[item[0].name] >= self.config["num_epochs"]]
        self.left = [flops for _, _, flops in final]
        for epoch in sorted(set(step.train.values())):
          if epoch < self.config["num_epochs"]:
            count = sum(1 for e in step.train.values() if e == epoch)
            log.info("rung %d: %d trial(s) train to epoch %d", epoch, count, epoch)
        executor.run(self._tasks(batch, step.train), lambda task, outcomes: self.deliver(task, outcomes, step.train))
      board.forget()
    log.info("sweep done: %d trials trained or recorded in %s (%d in all)", len(self.recorded),
             progress.hms(time.perf_counter() - self.start), len(self.trials))  # fmt: skip
    return self._report()

  def _report(self) -> report.Report:
    return report.write_report(self.store.workdir, self.config)  # every recorded trial of this grid

  def _tasks(self, work: Sequence[tuple[trials.Trial, int, float]], epochs: Mapping[str, int]) -> list[Task]:
    """One task per trial, or (``seeds_together``) one per program — the trials that differ only in their
    seed and learning rate — with those that train to the same epoch; each trains to its epoch in
    ``epochs`` (a rung before ``num_epochs``, or the last)."""

    def config(trial: trials.Trial) -> dict[str, Any]:
      values = trial.config.to_dict()
      return values if epochs[trial.name] == values["num_epochs"] else {**values, "num_epochs": epochs[trial.name]}

    if not self.sweep.get("seeds_together"):
      return [Task((t.name,), (config(t),), flops) for t, _, flops in work]
    groups: dict[tuple[str, int], list[tuple[trials.Trial, int, float]]] = {}
    for item in work:
      groups.setdefault((trials.program_name(item[0].overrides), epochs[item[0].name]), []).append(item)
    return [Task(tuple(t.name for t, _, _ in g), tuple(config(t) for t, _, _ in g), g[0][2]) for g in groups.values()]

  def deliver(self, task: Task, outcomes: list[dict[str, Any]], epochs: Mapping[str, int] | None = None) -> None:
    """Records a finished task's trials: a line per trial, never twice in one run. A trial trained to a
    rung (its epoch in ``epochs`` before ``num_epochs``) that reached it gets no line yet; one that failed
    or stopped early (``stop_at``) is finished and gets its line now."""
    for outcome in outcomes:
      name = outcome["name"]
      rung = (epochs or {}).get(name, self.config["num_epochs"])
      rung = rung if rung < self.config["num_epochs"] else None
      if name in self.recorded or name not in self.flatten:
        log.warning("trial %s was delivered again; its line is already in %s", name, self.store.results_path)
        continue
      trial, cause = self.by_name[name], outcome.get("cause")
      if cause == "storage":
        raise StorageError(f"trial {name}: {outcome['error']}; free some space and re-run the same command to resume")
      if cause == "unshared":
        raise ConfigError(outcome["error"])
      summary = outcome.get("summary", {})
      if rung is not None and outcome["status"] != "failed" and not summary.get("stopped_early"):
        at = self.store.at_rung(name, rung)
        log.info("rung %d: %s reached epoch %d: %s", rung, name, rung,
                 f"{100 * sweep_store.deciding(at):.2f}% validation" if at else "no metrics")  # fmt: skip
        continue
      where = {key: outcome[key] for key in ("node", "concurrent_trials", "started", "ended")}
      where["executor"] = self.executor_name
      if outcome["status"] == "failed" and "summary" not in outcome:
        log.warning("trial %s failed: %s", name, outcome["error"])
        record = self._record(trial, "failed", error=outcome["error"], cause=cause, **where)
      else:
        fields = {k: summary[k] for k in RESULT_FIELDS if k in summary}
        record = self._record(trial, summary["status"], flatten_size=self.flatten[name], **fields, **where)
      self._progress(trial, task, outcome, record)

  def _progress(self, trial: trials.Trial, task: Task, outcome: Mapping[str, Any], record: Mapping[str, Any]) -> None:
    if self.left and task.flops in self.left:
      self.timings.append((task.flops, outcome["ended"] - outcome["started"]))
      self.left.remove(task.flops)
    one_by_one = self.executor_name == "local" and isinstance(self.strategy, strategies.Grid)
    eta = progress.estimate_seconds(self.timings, self.left) if one_by_one else None
    eta_text = f", ETA {progress.hms(eta)}" if eta is not None and self.left else ""
    accuracy = record.get(analysis.DECIDES, record.get(analysis.REPORTS))
    split = "validation" if analysis.DECIDES in record else "test"
    result = f"{100 * accuracy:.2f}% {split}" if accuracy is not None else record["status"]
    log.info("trial %d/%d done: %s: %s (%d left; elapsed %s%s)", self.trials.index(trial) + 1, len(self.trials),
             trial.name, result, len(self.left), progress.hms(time.perf_counter() - self.start), eta_text)  # fmt: skip

  def _pruned_fields(self, name: str, rung: int, verdict: strategies.Verdict) -> dict[str, Any]:
    """A pruned trial's result fields: its summary's facts, its metrics at the rung, and the verdict."""
    summary = self.store.summary(name) or {}
    figures = self.store.at_rung(name, rung) or {}
    return {
      **{k: summary[k] for k in RESULT_FIELDS if k in summary},
      **{k: figures[k] for k in RUNG_FIELDS if k in figures},
      "epoch": rung,
      "stopped_early": False,
      "pruned_at": rung,
      "pruned_by": verdict.by,
      "accuracy_lead": verdict.accuracy_lead,
      "prune_margin": verdict.margin,
      "speedup": verdict.speedup,
      "error": verdict.text(),
    }
