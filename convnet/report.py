"""Sweep results -> table, Pareto front, sweet spot, plots.

    python -m convnet.report --workdir=runs/sweep     # re-makes the report from results.jsonl

Writes ``results.csv`` (one row per trial), ``report.md`` (one row per configuration, mean ± std
over seeds; the Pareto front and the sweet spot), ``pareto.png`` (test accuracy against seconds
per epoch) and ``learning_curves.png`` (test accuracy per epoch); a plot that could show nothing
(one configuration, one epoch) is left out. The numbers come from ``convnet.analysis`` (pure
functions on the records); this module reads the records and writes the files.
"""

from collections.abc import Mapping, Sequence
import csv
import dataclasses
import io
import json
import logging
import math
from pathlib import Path
import statistics
from typing import Any

from convnet import analysis, hparams, locks, logs, plots, provenance, pruning
from convnet.errors import ConfigError, DataError

log = logging.getLogger("convnet")
RESULTS_FILE = "results.jsonl"
REPORT_FILE = "report.md"
CSV_FILE = "results.csv"
PLOT_FILES = ("pareto.png", "learning_curves.png")
CSV_FIELDS = (
    "name", "status", "seed", "test_accuracy", "train_accuracy", "test_loss", "train_loss", "epoch",
    "epoch_seconds", "examples_per_second", "compile_seconds", "num_params", "flops_per_example", "flatten_size",
    "backend", "device", "machine", "code", "pruned_at", "pruned_by", "error",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Report:
  """What :func:`write_report` wrote: report.md's text, the trials, the configurations, the sweet spot, the files."""

  text: str
  results: list[dict[str, Any]]
  rows: list[analysis.ConfigResult]
  sweet_spot: analysis.ConfigResult | None
  files: list[Path]

  def pareto_figure(self):
    """Test accuracy against seconds per epoch, the Pareto front and the sweet spot (a matplotlib Figure)."""
    return _pareto_figure(self.rows, self.sweet_spot, self.results)


def read(workdir: str | Path) -> Report:
  """A sweep directory's report, computed from its files and writing nothing (for notebooks)::

  sweep = report.read("experiments/fashion_mnist_sweet_spot/default_grid")
  sweep.sweet_spot.name, sweep.pareto_figure()
  """
  workdir = Path(workdir)
  config = logs.read_json(workdir / logs.CONFIG_FILE)
  if config is None:
    raise DataError(f"{workdir / logs.CONFIG_FILE}: not found; {workdir} is not a sweep directory")
  results = read_results(workdir)
  rows = analysis.aggregate(results)
  text = markdown(config, results, fixed=fixed_costs(workdir, results))
  return Report(text, list(results), rows, analysis.chosen_sweet_spot(rows, config)[0], [])


def read_results(workdir: str | Path) -> list[dict[str, Any]]:
  """The recorded trials of a sweep directory, one per name (a later line for a name wins), in file order.

  A corrupt line is reported (a warning naming the file and line) and skipped: its trial counts as
  not recorded, so a re-run of the sweep runs it again.
  """

  def skip(problem: str) -> None:
    log.warning("%s; that trial counts as not recorded (a re-run of the sweep runs it again)", problem)

  records = logs.read_jsonl(Path(workdir) / RESULTS_FILE, on_bad_line=skip)
  return list({r["name"]: r for r in records if isinstance(r.get("name"), str)}.values())


def write_csv(path: Path, results: Sequence[Mapping[str, Any]]) -> None:
  override_keys = sorted({k for r in results for k in r.get("overrides", {}) if k not in CSV_FIELDS})

  def cell(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (list, tuple)) else value

  out = io.StringIO()
  writer = csv.writer(out)
  writer.writerow([*CSV_FIELDS[:2], *override_keys, *CSV_FIELDS[2:]])
  for r in results:
    fields = {**r, "code": (r.get("code") or {}).get("source", "")}
    overrides = [cell(r.get("overrides", {}).get(k)) for k in override_keys]
    writer.writerow([r.get("name"), r.get("status"), *overrides, *(fields.get(k, "") for k in CSV_FIELDS[2:])])
  logs.atomic_write_text(path, out.getvalue())


def _pareto_figure(rows: Sequence[analysis.ConfigResult], spot, results: Sequence[Mapping[str, Any]]):
  """pareto.png's figure: the configurations, their front, the sweet spot and the pruned ones greyed."""
  return plots.pareto(rows, analysis.pareto_front(rows), spot, _machine(results), analysis.pruned(results))


def _machine(results: Sequence[Mapping[str, Any]]) -> str:
  seen = provenance.distinct(
    results, lambda r: f"{r.get('backend', '?')} backend, {r.get('device', '?')}, {r.get('machine', '?')}"
  )
  return "; ".join(seen) or "no completed trials"


def _how_run(results: Sequence[Mapping[str, Any]]) -> str:
  executors = sorted({r.get("executor", "local") for r in results if r.get("status") == "completed"})
  most = max((r.get("concurrent_trials", 1) for r in results if r.get("status") == "completed"), default=1)
  where = f" ({', '.join(executors)} executor)" if executors else ""
  if most <= 1:
    return f"Trials ran one at a time{where}."
  return f"Trials ran side by side{where}, up to {most} at once on a node."


def _contention(results: Sequence[Mapping[str, Any]]) -> list[str]:
  """Why timings may not compare: trials that shared a node, or seeds timed as one program."""
  done = [r for r in results if r.get("status") == "completed"]
  out = []
  shared = [r for r in done if r.get("concurrent_trials", 1) > 1]
  if shared:
    most = max(r["concurrent_trials"] for r in shared)
    out.append(
      f"{len(shared)} of {len(done)} trials were timed while other trials ran on the same node (up to {most} at "
      "once), which slows them by an amount that depends on what ran beside them: their s/epoch measure the "
      "node's contention as much as the network (the local executor runs trials one at a time)"
    )
  together = sorted({r.get("seeds_together", 1) for r in done} - {1})
  if together:
    out.append(
      f"seeds were trained together ({', '.join(map(str, together))} per program): a trial's s/epoch is its "
      "whole group's epoch"
    )
  return out


def fixed_costs(workdir: str | Path, results: Sequence[Mapping[str, Any]]) -> list[float]:
  """Seconds each trial spent outside its epochs (data, model, compilation, evaluation, checkpoints):
  ``total_seconds - train_seconds`` from its summary.json, for the trials trained in one go (a resumed
  one's ``train_seconds`` counts epochs of its earlier entries)."""
  out = []
  for r in results:
    summary = logs.read_json(Path(workdir) / "trials" / r["name"] / logs.SUMMARY_FILE) if r.get("epoch") else None
    if summary and not summary.get("resumed_from") and {"total_seconds", "train_seconds"} <= set(summary):
      out.append(summary["total_seconds"] - summary["train_seconds"])
  return out


def markdown(
  config: Mapping[str, Any],
  results: Sequence[Mapping[str, Any]],
  input_pixels: int | None = None,
  fixed: Sequence[float] = (),
) -> str:
  """report.md's text (``fixed``: :func:`fixed_costs`)."""
  rows = analysis.aggregate(results)
  front = {r.name for r in analysis.pareto_front(rows)}
  rule = config.get("report", {}).get("rule", "within_std")
  dataset = config.get("dataset", {})
  lines = [
    "# Sweep report",
    "",
    f"Timings from: {_machine(results)}. Seconds per epoch exclude compilation; each trial's figure is the",
    "median over its epochs, then mean ± std over seeds (n=1: one seed, spread unknown). " + _how_run(results),
    f"Epochs: {config.get('num_epochs')}, batch size {config.get('batch_size')}, {config.get('optimizer')} "
    f"{config.get('learning_rate')}; data: {dataset.get('name')} ({dataset.get('num_train_examples') or 'all'} "
    f"train / {dataset.get('num_test_examples') or 'all'} test images).",
    "Code: "
    + ("; ".join(provenance.distinct(results, lambda r: provenance.code_label(r.get("code")))) or "none")
    + ".",
  ]
  if fixed:
    lines.append(
      f"Time per trial outside its epochs (data, model, compilation, evaluation, checkpoints; summary.json's "
      f"total - train seconds of the {len(fixed)} trial(s) trained in one go): median {statistics.median(fixed):.2f} s "
      f"({min(fixed):.2f}-{max(fixed):.2f})."
    )
  for warning in provenance.differences(results) + _contention(results):
    lines += ["", f"**Warning:** {warning}; compare timings only among trials that share them."]
  if rows:
    spot, why = analysis.chosen_sweet_spot(rows, config)
    if spot is None:
      lines += ["", f"**{why[0].upper()}{why[1:]}.**"]
    else:
      lines += [
        "",
        f"**Sweet spot: {spot.name}** — {analysis.accuracy_text(spot)} test accuracy "
        f"at {spot.seconds_mean:.2f} s/epoch, {spot.num_params:,} parameters.",
        f"Rule (`report.rule={rule}`): {why}.",
      ]
    lines += [
      "",
      "| configuration | seeds | test accuracy % | s/epoch | examples/s | params | MFLOP/example | flattened | Pareto |",
      "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: r.seconds_mean):
      mark = "**yes**" if r.name in front else ""
      star = " ★" if spot is not None and r.name == spot.name else ""
      seconds = f"{r.seconds_mean:.2f} ± {r.seconds_std:.2f}" if len(r.seeds) > 1 else f"{r.seconds_mean:.2f}"
      lines.append(
        f"| {r.name}{star} | {len(r.seeds)} | {analysis.accuracy_text(r).replace('%', '')} | {seconds} | "
        f"{r.examples_per_second:,.0f} | {r.num_params:,} | {r.flops_per_example / 1e6:.2f} | {r.flatten_size:,} | {mark} |"
      )
    lines += ["", "Pareto front (fastest first): " + " → ".join(r.name for r in analysis.pareto_front(rows)) + "."]
    if input_pixels:
      lines.append(f"Flattened = the feature vector entering the dense layers (input: {input_pixels:,} pixels).")
  else:
    lines += ["", "No completed trials yet."]
  lines += _pruning(config, results)
  others = [r for r in results if r.get("status") not in ("completed", "pruned")]
  if others:
    lines += ["", "## Trials not completed", "", "| trial | status | reason |", "|---|---|---|"]
    lines += [f"| {r['name']} | {r['status']} | {str(r.get('error', '')).replace('|', '/')} |" for r in others]
  lines += ["", "Files: `results.csv` (one row per trial), the plots, `trials/<name>/` (each trial's run)."]
  return "\n".join(lines) + "\n"


def _pruning(config: Mapping[str, Any], results: Sequence[Mapping[str, Any]]) -> list[str]:
  """report.md's pruning section: the rule, what it stopped where and why, the trial-epochs saved."""
  stopped = analysis.pruned(results)
  if pruning.method(config) is None and not stopped:
    return []
  spent, full = analysis.trial_epochs(results, config.get("num_epochs", 0))
  rungs = ", ".join(map(str, config.get("prune_rungs", ()))) or "none"
  lines = [
    "",
    "## Pruning",
    "",
    f"Rule (`prune={config.get('prune')}`, rungs at epochs {rungs}): after each rung, a configuration stops when a "
    "faster one (s/epoch) that trains on is at least as accurate there within the seeds' noise: mean test "
    f"accuracy >= its own mean - {config.get('prune_margin', 1.0):g} x the larger of the two standard deviations over seeds "
    f"(`prune_margin`; with one seed, {100 * config.get('prune_one_seed_margin', 0.005):.2f} points, "
    "`prune_one_seed_margin`)"
    + (
      "; a configuration within that margin of the rung's most accurate one is kept (`prune_keep_leaders`): it "
      "may still become the most accurate, which sets the sweet spot's bar"
      if config.get("prune_keep_leaders", True)
      else "; leaders are not kept (`prune_keep_leaders=False`)"
    )
    + ". The sweet spot and the Pareto front above are chosen among the configurations that trained to the last "
    "epoch only.",
    "",
    f"Trial-epochs trained: {spent:,} of the full grid's {full:,} ({100 * spent / full:.0f}%; saved {full - spent:,})."
    if full
    else "No trial has trained yet.",
  ]
  if stopped:
    lines += [
      "",
      "| configuration | stopped after epoch | seeds | test accuracy % there | s/epoch | dominated by | its lead (points) | margin (points) | speedup |",
      "|---|---|---|---|---|---|---|---|---|",
    ]
    for p in stopped:
      lines.append(
        f"| {p.row.name} | {p.epoch} | {len(p.row.seeds)} | {analysis.accuracy_text(p.row).replace('%', '')} | "
        f"{p.row.seconds_mean:.2f} | {p.by} | {100 * p.accuracy_lead:+.2f} | {100 * p.margin:.2f} | {p.speedup:.2f}x |"
      )
  else:
    lines += ["", "No configuration was stopped."]
  return lines


def _learning_curves(workdir: Path, results: Sequence[Mapping[str, Any]]) -> dict[str, dict[int, list[float]]]:
  curves: dict[str, dict[int, list[float]]] = {}
  for r in results:
    if r.get("status") in ("completed", "pruned"):  # a pruned one's curve ends where it stopped
      for m in logs.read_jsonl(workdir / "trials" / r["name"] / logs.METRICS_FILE):
        if m["epoch"] <= r.get("epoch", m["epoch"]):
          curves.setdefault(analysis.config_name(r), {}).setdefault(m["epoch"], []).append(m["test_accuracy"])
  return curves


def write_report(
  workdir: str | Path, config: Mapping[str, Any] | None = None, results: Sequence[Mapping[str, Any]] | None = None
) -> Report:
  """Writes results.csv, report.md and the plots that can show something into ``workdir``."""
  workdir = Path(workdir)
  config = config if config is not None else logs.read_json(workdir / logs.CONFIG_FILE) or {}
  results = read_results(workdir) if results is None else results
  pixels = None
  if config.get("dataset"):
    from convnet import input_pipeline

    try:
      pixels = math.prod(input_pipeline.peek_shape(config["dataset"])[0])
    except (DataError, ConfigError):
      pass  # the data is gone; the report still stands without the pixel count
  write_csv(workdir / CSV_FILE, results)
  if config.get("tensorboard", True):
    hparams.write(workdir, results)  # TensorBoard's HParams dashboard: a session per trial
  text = markdown(config, results, pixels, fixed_costs(workdir, results))
  logs.atomic_write_text(workdir / REPORT_FILE, text)
  rows = analysis.aggregate(results)
  spot = analysis.chosen_sweet_spot(rows, config)[0]
  curves = _learning_curves(workdir, results)
  figures = {
    "pareto.png": (len(rows) > 1) and (lambda: _pareto_figure(rows, spot, results)),
    "learning_curves.png": any(len(c) > 1 for c in curves.values()) and (lambda: plots.learning_curves(curves)),
  }
  files = [workdir / REPORT_FILE, workdir / CSV_FILE]
  for name, make in figures.items():
    if make:
      plots.save(make(), workdir / name)
      files.append(workdir / name)
    else:  # nothing to show (one configuration, one epoch): no plot, and no stale one from an earlier report
      (workdir / name).unlink(missing_ok=True)
  return Report(text, list(results), rows, spot, files)


def define_flags(values) -> None:
  from absl import flags

  flags.DEFINE_string("workdir", None, "A sweep directory (holds results.jsonl).", flag_values=values)
  flags.mark_flag_as_required("workdir", flag_values=values)


def main(values) -> None:
  workdir = Path(values.workdir)
  if not (workdir / RESULTS_FILE).is_file():
    raise DataError(f"{workdir / RESULTS_FILE}: not found; run a sweep into {workdir} first")
  with locks.hold(workdir):  # one writer of the report's files: not while the sweep itself runs
    done = write_report(workdir)
  print(done.text)
  print("wrote " + ", ".join(str(f) for f in done.files))


if __name__ == "__main__":
  from convnet import cli

  cli.run(main, define_flags)
