"""The sweep: expand ``config.sweep`` into trials, run them one by one, record, resume, report.

Each trial is the base config with a few overrides and a stable, readable name derived from them
(``features=32-32,kernel_size=5,seed=1``); it trains with ``train.train_and_evaluate`` in
``DIR/trials/<name>/``, here one after another or on a Ray cluster side by side (``config.executor``,
see ``convnet.executors``). ``DIR/results.jsonl`` gets one line per finished trial (completed, failed
or skipped), appended by this process only (the driver) with one fsynced write as each trial ends, so
a ``kill -9`` at any moment leaves every line whole and none twice. The sweep holds ``DIR``'s lock
while it works (``convnet.locks``).

Re-running the same command skips recorded trials and resumes an interrupted one from its
checkpoint. A trial that failed for a reason outside it (I/O, data, a crash) runs again; one that
failed on its own (a NaN or diverged loss, a bad value) stays failed unless ``retry_failed=True``;
an impossible shape stays skipped. A retried trial's new line follows its old one (the later wins),
so ``results.jsonl`` keeps the history. A re-run may add axis values (extending the sweep) and change
the fields that change no result; any other change is refused, naming the field. A full disk stops
the sweep with its records intact (free space, re-run to resume). With the local executor trials run
one at a time so that their timings are comparable; each result line says on which node and beside
how many other trials it ran (``node``, ``concurrent_trials``).
"""

from collections.abc import Mapping
import copy
import dataclasses
import itertools
import logging
from pathlib import Path
import statistics
import time
from typing import Any

import ml_collections

from convnet import analysis, configuration, executors, input_pipeline, locks, logs, models, provenance, pruning, report
from convnet.errors import ConfigError, StorageError

log = logging.getLogger("convnet")
RESULTS_FILE = report.RESULTS_FILE
TRIALS_DIR = executors.TRIALS_DIR
# Not part of a trial's config (how and where trials run changes no result beyond float rounding).
SWEEP_FIELDS = (
    "sweep", "sweep_zip", "report", "retry_failed", "executor", "ray_address", "trial_resources", "max_failures",
    "seeds_together", "prune", "prune_rungs", "prune_margin", "prune_one_seed_margin", "prune_keep_leaders",
)  # fmt: skip
# What may change between a sweep and its re-run: the sweep's own fields and what changes no result.
# (Unlike a single run, num_epochs and stop_at may not: recorded trials would keep their old values.)
SWEEP_RESUMABLE = set(SWEEP_FIELDS) | (configuration.RESUMABLE_CHANGES - {"num_epochs", "stop_at"})
OWN_FAILURES = ("training", "config")  # failed on its own: retried only with retry_failed=True


@dataclasses.dataclass(frozen=True)
class Trial:
  name: str
  overrides: dict[str, Any]  # dotted config path -> value
  config: ml_collections.ConfigDict


def resolve_axis(axis: str, base: Mapping[str, Any]) -> str:
  """The config path an axis sets: ``seeds`` -> ``seed``, ``features`` -> ``model.features``."""
  if axis == "seeds":
    return "seed"
  wanted = axis.replace("__", ".")
  candidates = [p for p in logs.flatten_dict(base) if p == wanted or p.endswith("." + wanted)]
  if len(candidates) != 1:
    problem = "matches no config field" if not candidates else f"is ambiguous ({', '.join(candidates)})"
    raise ConfigError(f"sweep axis {axis!r} {problem}; name it by path with '__', e.g. model__kernel_size")
  return candidates[0]


def _format_value(value: Any) -> str:
  if isinstance(value, (tuple, list)):
    return "-".join(_format_value(v) for v in value)
  return str(value)


def trial_name(overrides: Mapping[str, Any]) -> str:
  """``leaf=value`` pairs joined by commas, seed last; tuples are joined by '-'."""
  keys = sorted((k for k in overrides if k != "seed"), key=lambda k: k.rsplit(".", 1)[-1]) + (
    ["seed"] if "seed" in overrides else []
  )
  return ",".join(f"{k.rsplit('.', 1)[-1]}={_format_value(overrides[k])}" for k in keys)


def base_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The config without its sweep fields: what every trial starts from."""
  base = copy.deepcopy(config)
  with base.unlocked():
    for field in SWEEP_FIELDS:
      if field in base:
        del base[field]
  return base


def expand(config: ml_collections.ConfigDict) -> list[Trial]:
  """All trials of ``config.sweep``: the product of the axes, zipped groups moving together."""
  base = base_config(config)
  axes = {name: tuple(values) for name, values in config.sweep.items()}
  for name, values in axes.items():
    if not values:
      raise ConfigError(f"sweep.{name} is empty; give at least one value")
  paths = {name: resolve_axis(name, base.to_dict()) for name in axes}
  groups: list[tuple[str, ...]] = []
  zipped: set[str] = set()
  for group in config.get("sweep_zip", ()) or ():
    group = tuple(group)
    unknown = [name for name in group if name not in axes or name in zipped]
    if unknown:
      raise ConfigError(f"sweep_zip group {group} names {unknown[0]!r}, which is not a sweep axis or is zipped twice")
    lengths = {name: len(axes[name]) for name in group}
    if len(set(lengths.values())) != 1:
      raise ConfigError(f"sweep_zip group {group} has axes of different lengths {lengths}; zipped axes move together")
    groups.append(group)
    zipped.update(group)
  groups += [(name,) for name in axes if name not in zipped]
  choices = [
    [dict(zip(group, values, strict=True)) for values in zip(*(axes[n] for n in group), strict=True)]
    for group in groups
  ]
  trials = []
  for combination in itertools.product(*choices):
    overrides = {paths[name]: value for part in combination for name, value in part.items()}
    trial_config = copy.deepcopy(base)
    for name, path in paths.items():
      try:
        trial_config.update_from_flattened_dict({path: overrides[path]})
        if path.startswith("model."):
          models.normalized(trial_config.model.to_dict())
      except (TypeError, ValueError) as e:  # ConfigError is a ValueError
        reason = str(e).splitlines()[0]
        raise ConfigError(
          f"sweep.{name}={axes[name]}: the value {overrides[path]!r} does not fit {path} ({reason}); "
          f"sweep axes are tuples of values, e.g. --config.sweep.{name}={_axis_example(axes[name])}"
        ) from None
    trials.append(Trial(trial_name(overrides), overrides, trial_config))
  names = [t.name for t in trials]
  if len(set(names)) != len(names):
    raise ConfigError(
      f"sweep has duplicate trials (repeated values on an axis: {axes}); sweep axes are tuples of values, "
      f"e.g. --config.sweep.features='((32,32),)' for one configuration"
    )
  return trials


def _axis_example(values: tuple[Any, ...]) -> str:
  """The axis written as the tuple of values it should be: (32, 32) -> '((32,32),)'."""
  compact = repr((tuple(values),)).replace(" ", "")
  return f"'{compact}'"


def read_results(workdir: str | Path) -> dict[str, dict[str, Any]]:
  """Recorded trials by name (a later line for the same name wins; a corrupt line is reported and skipped)."""
  return {r["name"]: r for r in report.read_results(workdir)}


def _shape_check(trial: Trial, image_shape, num_classes) -> tuple[str | None, list[models.LayerSpec]]:
  try:
    return None, models.layer_specs(configuration.model_kwargs(trial.config.to_dict(), num_classes), image_shape)
  except ConfigError as e:
    return str(e), []


def _record(workdir: Path, trial: Trial, status: str, **fields: Any) -> dict[str, Any]:
  record = {"name": trial.name, "overrides": trial.overrides, "seed": trial.config.seed, "status": status, **fields}
  logs.append_jsonl(workdir / RESULTS_FILE, record)
  return record


RESULT_FIELDS = (
    "test_accuracy", "train_accuracy", "test_loss", "train_loss", "epoch", "epoch_seconds", "examples_per_second",
    "compile_seconds", "train_seconds", "num_params", "flops_per_example", "num_classes", "backend", "device",
    "machine", "stopped_early", "code", "code_sources", "seeds_together",
)  # fmt: skip


def estimate_seconds(done: list[tuple[float, float]], remaining: list[float]) -> float | None:
  """Seconds left, from (FLOPs, seconds) of finished trials: a least-squares line time = a + b * FLOPs.

  Small trials are dominated by fixed costs (data, compilation, evaluation), so a plain FLOP rate
  from them overestimates the big ones and a plain mean underestimates them.
  """
  if not done:
    return None
  flops = [f for f, _ in done]
  seconds = [t for _, t in done]
  mean_f, mean_t = sum(flops) / len(flops), sum(seconds) / len(seconds)
  spread = sum((f - mean_f) ** 2 for f in flops)
  slope = max(0.0, sum((f - mean_f) * (t - mean_t) for f, t in done) / spread) if spread else 0.0
  if not spread:  # one size seen so far: assume time grows in proportion to FLOPs
    slope = mean_t / mean_f if mean_f else 0.0
    return sum(slope * f for f in remaining)
  intercept = max(0.0, mean_t - slope * mean_f)
  return sum(intercept + slope * f for f in remaining)


def _hms(seconds: float) -> str:
  seconds = int(round(seconds))
  return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def swept_paths(config: Mapping[str, Any]) -> set[str]:
  """The config paths a sweep's axes set (their values in the base config do not matter)."""
  base = {k: v for k, v in config.items() if k not in SWEEP_FIELDS and k != logs.CODE_KEY}
  return {resolve_axis(name, base) for name in config.get("sweep", {})}


def check_same_sweep(previous: Mapping[str, Any] | None, config: ml_collections.ConfigDict, workdir: Path) -> None:
  """ConfigError if ``workdir`` holds a sweep whose trials would differ from ``config``'s in more than
  their axes: new axis values extend a sweep, and the fields that do not change a result may change."""
  if previous is not None:
    current = config.to_dict()
    ignored = SWEEP_RESUMABLE | swept_paths(previous) | swept_paths(current)
    configuration.check_same_run(previous, current, workdir, resumable=ignored)


def _to_retry(record: Mapping[str, Any], retry_failed: bool, prune: bool = False) -> bool:
  """Whether a recorded trial runs again: failed for a reason outside it, or on its own if asked to;
  pruned, in a sweep without pruning (it trains on from its checkpoint to ``num_epochs``)."""
  if record.get("status") == "pruned":
    return not prune
  if record.get("status") != "failed":
    return False
  return record.get("cause") not in OWN_FAILURES or retry_failed


def run(config: ml_collections.ConfigDict, workdir: str | Path) -> report.Report:
  """Runs (or resumes) the sweep in ``workdir`` (holding its lock), writes the report and returns it."""
  workdir = Path(workdir)
  trials = expand(config)
  configuration.check_config(base_config(config).to_dict())
  executors.check_config(config.to_dict())
  pruning.rungs(config.to_dict())
  with locks.hold(workdir):
    check_same_sweep(logs.read_json(workdir / logs.CONFIG_FILE), config, workdir)
    logs.write_json(workdir / logs.CONFIG_FILE, {**config.to_dict(), logs.CODE_KEY: provenance.code_record()})
    return _run(config, workdir, trials)


def _tasks(work: list[tuple[Trial, int, float]], together: bool, num_epochs: int | None = None) -> list[executors.Task]:
  """One task per trial, or (``together``) one per configuration with all its seeds; ``num_epochs``
  (a rung) replaces the trials' own."""

  def config(trial: Trial) -> dict[str, Any]:
    values = trial.config.to_dict()
    return values if num_epochs is None else {**values, "num_epochs": num_epochs}

  if not together:
    return [executors.Task((t.name,), (config(t),), flops) for t, _, flops in work]
  groups: dict[str, list[tuple[Trial, int, float]]] = {}
  for item in work:
    groups.setdefault(analysis.config_name({"name": item[0].name}), []).append(item)
  return [
    executors.Task(tuple(t.name for t, _, _ in g), tuple(config(t) for t, _, _ in g), g[0][2]) for g in groups.values()
  ]


def epochs(workdir: Path, name: str) -> list[dict[str, Any]]:
  """A trial's metrics.jsonl lines (one per epoch trained)."""
  return logs.read_jsonl(workdir / TRIALS_DIR / name / logs.METRICS_FILE)


def at_rung(workdir: Path, name: str, rung: int) -> dict[str, Any] | None:
  """A trial's figures after epoch ``rung``: that epoch's metrics, and the median s/epoch through it."""
  history = [m for m in epochs(workdir, name) if m["epoch"] <= rung]
  if not history or history[-1]["epoch"] != rung:
    return None
  seconds = statistics.median(m["epoch_seconds"] for m in history)
  return {**history[-1], "epoch_seconds": seconds}


def standings(workdir: Path, names: list[str], rung: int) -> list[pruning.Standing]:
  """Each configuration's standing at ``rung``, over its trials (``names``) that reached it."""
  seeds: dict[str, list[tuple[float, float]]] = {}
  for name in names:
    figures = at_rung(workdir, name, rung)
    if figures is not None:
      seeds.setdefault(analysis.config_name({"name": name}), []).append(
        (figures["test_accuracy"], figures["epoch_seconds"])
      )
  return [pruning.standing(config, values) for config, values in seeds.items()]


def _run(config: ml_collections.ConfigDict, workdir: Path, trials: list[Trial]) -> report.Report:
  image_shape, num_classes = input_pipeline.peek_shape(config.dataset)
  done = read_results(workdir)
  retry_failed = bool(config.get("retry_failed"))
  rungs = pruning.rungs(config.to_dict())
  prune = pruning.method(config) is not None

  # Impossible shapes are recorded before anything trains.
  work = []
  for trial in trials:
    reason, specs = _shape_check(trial, image_shape, num_classes)
    if trial.name in done and not _to_retry(done[trial.name], retry_failed, prune):
      continue
    if reason:
      log.info("skipping %s: %s", trial.name, reason)
      done[trial.name] = _record(workdir, trial, "skipped", error=reason)
    else:
      flatten = next(s for s in specs if s.kind == "Flatten").output_shape[0]
      work.append((trial, flatten, sum(s.flops for s in specs)))

  by_name = {trial.name: (trial, flatten) for trial, flatten, _ in work}
  together = bool(config.get("seeds_together"))
  executor = config.get("executor", "local")
  recorded: set[str] = set()
  start = time.perf_counter()
  timings: list[tuple[float, float]] = []
  left: list[float] = []
  if work:
    log.info("%d of %d trials to run (%s executor%s%s)", len(work), len(trials), executor,
             ", seeds together" if together else "",
             f", pruning at epochs {', '.join(map(str, rungs))}" if rungs else "")  # fmt: skip

  def where(outcome: Mapping[str, Any]) -> dict[str, Any]:
    return {**{key: outcome[key] for key in ("node", "concurrent_trials", "started", "ended")}, "executor": executor}

  def deliver(task: executors.Task, outcomes: list[dict[str, Any]], rung: int | None = None) -> None:
    """The one writer of results.jsonl: a line per trial of a finished task, never twice in one run.

    At a rung (``rung`` given) a trial that reached it gets no line yet; one that failed or stopped
    early (``stop_at``) is finished and gets its line now.
    """
    for outcome in outcomes:
      name = outcome["name"]
      if name in recorded or name not in by_name:
        log.warning("trial %s was delivered again; its line is already in %s", name, RESULTS_FILE)
        continue
      trial, flatten = by_name[name]
      cause = outcome.get("cause")
      if cause == "storage":
        raise StorageError(f"trial {name}: {outcome['error']}; free some space and re-run the same command to resume")
      if cause == "unshared":
        raise ConfigError(outcome["error"])
      summary = outcome.get("summary", {})
      if rung is not None and outcome["status"] != "failed" and not summary.get("stopped_early"):
        accuracy = at_rung(workdir, name, rung)
        log.info("rung %d: %s reached epoch %d: %s", rung, name, rung,
                 f"{100 * accuracy['test_accuracy']:.2f}%" if accuracy else "no metrics")  # fmt: skip
        continue
      if outcome["status"] == "failed" and "summary" not in outcome:
        log.warning("trial %s failed: %s", name, outcome["error"])
        done[name] = _record(workdir, trial, "failed", error=outcome["error"], cause=cause, **where(outcome))
      else:
        fields = {k: summary[k] for k in RESULT_FIELDS if k in summary}
        done[name] = _record(workdir, trial, summary["status"], flatten_size=flatten, **fields, **where(outcome))
      recorded.add(name)
      if left:
        timings.append((task.flops, outcome["ended"] - outcome["started"]))
        left.remove(task.flops)
      elapsed = time.perf_counter() - start
      eta = estimate_seconds(timings, left) if executor == "local" and not rungs else None  # one after another
      eta_text = f", ETA {_hms(eta)}" if eta is not None and left else ""
      accuracy = done[name].get("test_accuracy")
      result = f"{100 * accuracy:.2f}%" if accuracy is not None else done[name]["status"]
      log.info("trial %d/%d done: %s: %s (%d left; elapsed %s%s)", trials.index(trial) + 1, len(trials), name,
               result, len(left), _hms(elapsed), eta_text)  # fmt: skip

  # The configurations' standings at a rung come from every trial that can reach it: those to run and
  # those already recorded as completed or pruned (a resumed sweep decides as the interrupted one did).
  names = [t.name for t in trials if t.name in by_name or done.get(t.name, {}).get("status") in ("completed", "pruned")]
  for rung in rungs:
    behind = [item for item in work if not any(m["epoch"] >= rung for m in epochs(workdir, item[0].name))]
    if behind:
      log.info("rung %d: %d trial(s) train to epoch %d", rung, len(behind), rung)
      executors.run(_tasks(behind, together, rung), config.to_dict(), workdir, lambda t, o, r=rung: deliver(t, o, r))
    work = [item for item in work if item[0].name not in recorded]
    names = [n for n in names if not (n in recorded and done[n]["status"] == "failed")]
    verdicts = pruning.dominated(
      standings(workdir, names, rung),
      config.get("prune_margin", pruning.DEFAULT_MARGIN),
      config.get("prune_one_seed_margin", pruning.ONE_SEED_MARGIN),
      config.get("prune_keep_leaders", True),
    )
    for item in [item for item in work if analysis.config_name({"name": item[0].name}) in verdicts]:
      trial, flatten = by_name[item[0].name]
      verdict = verdicts[analysis.config_name({"name": trial.name})]
      done[trial.name] = _record(workdir, trial, "pruned", **_pruned_fields(workdir, trial.name, rung, verdict),
                                 flatten_size=flatten, executor=executor)  # fmt: skip
      recorded.add(trial.name)
      log.info("pruned at epoch %d: %s (%s)", rung, trial.name, verdict.text())
    work = [item for item in work if item[0].name not in recorded]

  left.extend(flops for _, _, flops in work)
  executors.run(_tasks(work, together), config.to_dict(), workdir, deliver)
  log.info("sweep done: %d trials in %s", len(trials), _hms(time.perf_counter() - start))
  results = [done[t.name] for t in trials if t.name in done]
  return report.write_report(workdir, config.to_dict(), results)


def _pruned_fields(workdir: Path, name: str, rung: int, verdict: pruning.Verdict) -> dict[str, Any]:
  """A pruned trial's result fields: its summary's facts, its metrics at the rung, and the verdict."""
  summary = logs.read_json(workdir / TRIALS_DIR / name / logs.SUMMARY_FILE) or {}
  figures = at_rung(workdir, name, rung) or {}
  metrics = ("test_accuracy", "train_accuracy", "test_loss", "train_loss", "epoch_seconds", "examples_per_second")
  return {
    **{k: summary[k] for k in RESULT_FIELDS if k in summary},
    **{k: figures[k] for k in metrics if k in figures},
    "epoch": rung,
    "stopped_early": False,
    "pruned_at": rung,
    "pruned_by": verdict.by,
    "accuracy_lead": verdict.accuracy_lead,
    "prune_margin": verdict.margin,
    "speedup": verdict.speedup,
    "error": verdict.text(),
  }
