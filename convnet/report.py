"""Sweep results -> table, Pareto front, sweet spot, plots.

    python -m convnet.report --workdir=runs/sweep     # re-makes the report from results.jsonl

Writes ``results.csv`` (one row per trial), ``report.md`` (one row per configuration, mean ± std
over seeds; the Pareto front and the sweet spot), ``pareto.png`` (test accuracy against seconds
per epoch) and ``learning_curves.png`` (test accuracy per epoch); a plot that could show nothing
(one configuration, one epoch) is left out. The analysis functions are pure: ``aggregate``,
``pareto_front`` and ``sweet_spot`` take and return plain data.
"""

from collections.abc import Mapping, Sequence
import csv
import dataclasses
import io
import json
import math
from pathlib import Path
import statistics
from typing import Any

from convnet import logs, plots, provenance
from convnet.errors import ConfigError, DataError

RESULTS_FILE = "results.jsonl"
REPORT_FILE = "report.md"
CSV_FILE = "results.csv"
PLOT_FILES = ("pareto.png", "learning_curves.png")
RULES = ("within_std", "within_tolerance")
CSV_FIELDS = (
    "name", "status", "seed", "test_accuracy", "train_accuracy", "test_loss", "train_loss", "epoch",
    "epoch_seconds", "examples_per_second", "compile_seconds", "num_params", "flops_per_example", "flatten_size",
    "backend", "device", "machine", "code", "error",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class ConfigResult:
  """One configuration (a trial without its seed), over its completed seeds."""

  name: str
  trials: tuple[str, ...]
  seeds: tuple[int, ...]
  accuracy_mean: float
  accuracy_std: float
  seconds_mean: float  # per epoch, compilation excluded
  seconds_std: float
  examples_per_second: float
  num_params: int
  flops_per_example: int
  flatten_size: int


@dataclasses.dataclass(frozen=True)
class Report:
  """What :func:`write_report` wrote: report.md's text, the trials, the configurations, the sweet spot, the files."""

  text: str
  results: list[dict[str, Any]]
  rows: list[ConfigResult]
  sweet_spot: ConfigResult | None
  files: list[Path]


def read_results(workdir: str | Path) -> list[dict[str, Any]]:
  """The recorded trials of a sweep directory, one per name (a later line for a name wins), in file order."""
  return list({r["name"]: r for r in logs.read_jsonl(Path(workdir) / RESULTS_FILE)}.values())


def _std(values: Sequence[float]) -> float:
  return statistics.stdev(values) if len(values) > 1 else 0.0


def config_name(record: Mapping[str, Any]) -> str:
  """A trial's name without its seed."""
  return ",".join(part for part in record["name"].split(",") if not part.startswith("seed=")) or "base"


def aggregate(results: Sequence[Mapping[str, Any]]) -> list[ConfigResult]:
  """Mean ± std over seeds of each configuration's completed trials, in first-seen order."""
  groups: dict[str, list[Mapping[str, Any]]] = {}
  for r in results:
    if r.get("status") == "completed":
      groups.setdefault(config_name(r), []).append(r)
  rows = []
  for name, trials in groups.items():
    accuracy = [t["test_accuracy"] for t in trials]
    seconds = [t["epoch_seconds"] for t in trials]
    rows.append(
      ConfigResult(
        name=name,
        trials=tuple(t["name"] for t in trials),
        seeds=tuple(t.get("seed", 0) for t in trials),
        accuracy_mean=statistics.fmean(accuracy),
        accuracy_std=_std(accuracy),
        seconds_mean=statistics.fmean(seconds),
        seconds_std=_std(seconds),
        examples_per_second=statistics.fmean(t["examples_per_second"] for t in trials),
        num_params=int(trials[0]["num_params"]),
        flops_per_example=int(trials[0]["flops_per_example"]),
        flatten_size=int(trials[0].get("flatten_size", 0)),
      )
    )
  return rows


def pareto_front(rows: Sequence[ConfigResult]) -> list[ConfigResult]:
  """Configurations no other beats on both mean accuracy (higher) and seconds per epoch (lower); fastest first."""

  def dominated(a: ConfigResult) -> bool:
    return any(
      b.accuracy_mean >= a.accuracy_mean
      and b.seconds_mean <= a.seconds_mean
      and (b.accuracy_mean > a.accuracy_mean or b.seconds_mean < a.seconds_mean)
      for b in rows
    )

  return sorted((r for r in rows if not dominated(r)), key=lambda r: r.seconds_mean)


def accuracy_text(row: ConfigResult) -> str:
  """'91.17% ± 0.32' over several seeds; '91.17% (n=1)' for one, whose spread is unknown, not zero."""
  spread = f"± {100 * row.accuracy_std:.2f}" if len(row.seeds) > 1 else "(n=1)"
  return f"{100 * row.accuracy_mean:.2f}% {spread}"


def sweet_spot(
  rows: Sequence[ConfigResult], rule: str = "within_std", tolerance: float = 0.005
) -> tuple[ConfigResult, str]:
  """The fastest configuration whose mean accuracy is close enough to the best; and the rule in words."""
  if rule not in RULES:
    raise ConfigError(f"report.rule={rule!r} is not allowed; use one of {RULES}")
  if not rows:
    raise DataError("no completed trials to choose a sweet spot from")
  best = max(rows, key=lambda r: r.accuracy_mean)
  if rule == "within_std":
    eligible = [
      r for r in rows if best.accuracy_mean - r.accuracy_mean <= max(r.accuracy_std, best.accuracy_std) + 1e-12
    ]
    why = (
      f"within one standard deviation over seeds (the larger of its own and the best's) of the best mean "
      f"accuracy ({best.name}: {accuracy_text(best)})"
    )
  else:
    eligible = [r for r in rows if best.accuracy_mean - r.accuracy_mean <= tolerance + 1e-12]
    why = f"within {100 * tolerance:.2f} points (report.tolerance) of the best mean accuracy ({best.name}: {100 * best.accuracy_mean:.2f}%)"
  chosen = min(eligible, key=lambda r: (r.seconds_mean, -r.accuracy_mean))
  return chosen, f"the fastest configuration (seconds per epoch) whose mean test accuracy is {why}"


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


def _machine(results: Sequence[Mapping[str, Any]]) -> str:
  seen = provenance.distinct(
    results, lambda r: f"{r.get('backend', '?')} backend, {r.get('device', '?')}, {r.get('machine', '?')}"
  )
  return "; ".join(seen) or "no completed trials"


def markdown(config: Mapping[str, Any], results: Sequence[Mapping[str, Any]], input_pixels: int | None = None) -> str:
  """report.md's text."""
  rows = aggregate(results)
  front = {r.name for r in pareto_front(rows)}
  rule = config.get("report", {}).get("rule", "within_std")
  tolerance = config.get("report", {}).get("tolerance", 0.005)
  dataset = config.get("dataset", {})
  lines = [
    "# Sweep report",
    "",
    f"Timings from: {_machine(results)}. Seconds per epoch exclude compilation; each trial's figure is the",
    "median over its epochs, then mean ± std over seeds (n=1: one seed, spread unknown). Trials ran one at a time.",
    f"Epochs: {config.get('num_epochs')}, batch size {config.get('batch_size')}, {config.get('optimizer')} "
    f"{config.get('learning_rate')}; data: {dataset.get('name')} ({dataset.get('num_train_examples') or 'all'} "
    f"train / {dataset.get('num_test_examples') or 'all'} test images).",
    "Code: "
    + ("; ".join(provenance.distinct(results, lambda r: provenance.code_label(r.get("code")))) or "none")
    + ".",
  ]
  for warning in provenance.differences(results):
    lines += ["", f"**Warning:** {warning}; compare timings only among trials that share them."]
  if rows:
    spot, why = sweet_spot(rows, rule, tolerance)
    lines += [
      "",
      f"**Sweet spot: {spot.name}** — {accuracy_text(spot)} test accuracy "
      f"at {spot.seconds_mean:.2f} s/epoch, {spot.num_params:,} parameters.",
      f"Rule (`report.rule={rule}`): {why}.",
      "",
      "| configuration | seeds | test accuracy % | s/epoch | examples/s | params | MFLOP/example | flattened | Pareto |",
      "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: r.seconds_mean):
      mark = "**yes**" if r.name in front else ""
      star = " ★" if r.name == spot.name else ""
      seconds = f"{r.seconds_mean:.2f} ± {r.seconds_std:.2f}" if len(r.seeds) > 1 else f"{r.seconds_mean:.2f}"
      lines.append(
        f"| {r.name}{star} | {len(r.seeds)} | {accuracy_text(r).replace('%', '')} | {seconds} | "
        f"{r.examples_per_second:,.0f} | {r.num_params:,} | {r.flops_per_example / 1e6:.2f} | {r.flatten_size:,} | {mark} |"
      )
    lines += ["", "Pareto front (fastest first): " + " → ".join(r.name for r in pareto_front(rows)) + "."]
    if input_pixels:
      lines.append(f"Flattened = the feature vector entering the dense layers (input: {input_pixels:,} pixels).")
  else:
    lines += ["", "No completed trials yet."]
  others = [r for r in results if r.get("status") != "completed"]
  if others:
    lines += ["", "## Trials not completed", "", "| trial | status | reason |", "|---|---|---|"]
    lines += [f"| {r['name']} | {r['status']} | {str(r.get('error', '')).replace('|', '/')} |" for r in others]
  lines += ["", "Files: `results.csv` (one row per trial), the plots, `trials/<name>/` (each trial's run)."]
  return "\n".join(lines) + "\n"


def _learning_curves(workdir: Path, results: Sequence[Mapping[str, Any]]) -> dict[str, dict[int, list[float]]]:
  curves: dict[str, dict[int, list[float]]] = {}
  for r in results:
    if r.get("status") == "completed":
      for m in logs.read_jsonl(workdir / "trials" / r["name"] / logs.METRICS_FILE):
        curves.setdefault(config_name(r), {}).setdefault(m["epoch"], []).append(m["test_accuracy"])
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
  text = markdown(config, results, pixels)
  logs.atomic_write_text(workdir / REPORT_FILE, text)
  rows = aggregate(results)
  rule = config.get("report", {})
  spot = sweet_spot(rows, rule.get("rule", "within_std"), rule.get("tolerance", 0.005))[0] if rows else None
  curves = _learning_curves(workdir, results)
  figures = {
    "pareto.png": (len(rows) > 1) and (lambda: plots.pareto(rows, pareto_front(rows), spot, _machine(results))),
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
  done = write_report(workdir)
  print(done.text)
  print("wrote " + ", ".join(str(f) for f in done.files))


if __name__ == "__main__":
  from convnet import cli

  cli.run(main, define_flags)
