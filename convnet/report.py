"""Sweep results -> table, Pareto front, sweet spot, plots.

    python -m convnet.report runs/sweep      # re-makes the report from results.jsonl

Writes ``results.csv`` (one row per trial), ``report.md`` (one row per configuration, mean ± std
over seeds; the Pareto front and the sweet spot), ``pareto.png`` (test accuracy against seconds
per epoch) and ``learning_curves.png`` (test accuracy per epoch). The analysis functions are pure:
``aggregate``, ``pareto_front`` and ``sweet_spot`` take and return plain data.
"""

from collections.abc import Mapping, Sequence
import csv
import dataclasses
import io
import json
import math
from pathlib import Path
import statistics
import sys
from typing import Any

from convnet import logs
from convnet.errors import ConfigError, DataError

RULES = ("within_std", "within_tolerance")
CSV_FIELDS = (
    "name", "status", "seed", "test_accuracy", "train_accuracy", "test_loss", "train_loss", "epoch",
    "epoch_seconds", "examples_per_second", "compile_seconds", "num_params", "flops_per_example", "flatten_size",
    "backend", "device", "error",
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
      f"accuracy ({best.name}: {100 * best.accuracy_mean:.2f}% ± {100 * best.accuracy_std:.2f})"
    )
  else:
    eligible = [r for r in rows if best.accuracy_mean - r.accuracy_mean <= tolerance + 1e-12]
    why = f"within {100 * tolerance:.2f} points (report.tolerance) of the best mean accuracy ({best.name}: {100 * best.accuracy_mean:.2f}%)"
  chosen = min(eligible, key=lambda r: (r.seconds_mean, -r.accuracy_mean))
  return chosen, f"the fastest configuration (seconds per epoch) whose mean test accuracy is {why}"


def write_csv(path: Path, results: Sequence[Mapping[str, Any]]) -> None:
  override_keys = sorted({k for r in results for k in r.get("overrides", {})})
  out = io.StringIO()
  writer = csv.writer(out)
  writer.writerow([*CSV_FIELDS[:2], *override_keys, *CSV_FIELDS[2:]])
  for r in results:
    overrides = [
      json.dumps(r.get("overrides", {}).get(k))
      if isinstance(r.get("overrides", {}).get(k), (list, tuple))
      else r.get("overrides", {}).get(k)
      for k in override_keys
    ]
    writer.writerow([r.get("name"), r.get("status"), *overrides, *(r.get(k, "") for k in CSV_FIELDS[2:])])
  logs.atomic_write_text(path, out.getvalue())


def _machine(results: Sequence[Mapping[str, Any]]) -> str:
  seen = sorted(
    {
      f"{r.get('backend', '?')} backend, {r.get('device', '?')}, {r.get('machine', '?')}"
      for r in results
      if r.get("status") == "completed"
    }
  )
  return "; ".join(seen) or "no completed trials"


def markdown(config: Mapping[str, Any], results: Sequence[Mapping[str, Any]], input_pixels: int | None = None) -> str:
  """report.md's text."""
  rows = aggregate(results)
  front = {r.name for r in pareto_front(rows)}
  rule = config.get("report", {}).get("rule", "within_std")
  tolerance = config.get("report", {}).get("tolerance", 0.005)
  lines = [
    "# Sweep report",
    "",
    f"Timings from: {_machine(results)}. Seconds per epoch exclude compilation; each trial's figure is the",
    "median over its epochs, then mean ± std over seeds. Trials ran one at a time.",
    f"Epochs: {config.get('num_epochs')}, batch size {config.get('batch_size')}, {config.get('optimizer')} "
    f"{config.get('learning_rate')}; data: {config.get('dataset', {}).get('name')} "
    f"({config.get('dataset', {}).get('num_train_examples') or 'all'} train / {config.get('dataset', {}).get('num_test_examples') or 'all'} test images).",
    "",
  ]
  if rows:
    spot, why = sweet_spot(rows, rule, tolerance)
    lines += [
      f"**Sweet spot: {spot.name}** — {100 * spot.accuracy_mean:.2f}% ± {100 * spot.accuracy_std:.2f} test accuracy "
      f"at {spot.seconds_mean:.2f} s/epoch, {spot.num_params:,} parameters.",
      f"Rule (`report.rule={rule}`): {why}.",
      "",
      "| configuration | seeds | test accuracy % | s/epoch | examples/s | params | MFLOP/example | flattened | Pareto |",
      "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: r.seconds_mean):
      mark = "**yes**" if r.name in front else ""
      star = " ★" if r.name == spot.name else ""
      lines.append(
        f"| {r.name}{star} | {len(r.seeds)} | {100 * r.accuracy_mean:.2f} ± {100 * r.accuracy_std:.2f} | "
        f"{r.seconds_mean:.2f} ± {r.seconds_std:.2f} | {r.examples_per_second:,.0f} | {r.num_params:,} | "
        f"{r.flops_per_example / 1e6:.2f} | {r.flatten_size:,} | {mark} |"
      )
    lines += ["", "Pareto front (fastest first): " + " → ".join(r.name for r in pareto_front(rows)) + "."]
    if input_pixels:
      lines.append(f"Flattened = the feature vector entering the dense layers (input: {input_pixels:,} pixels).")
  else:
    lines.append("No completed trials yet.")
  others = [r for r in results if r.get("status") != "completed"]
  if others:
    lines += ["", "## Trials not completed", "", "| trial | status | reason |", "|---|---|---|"]
    lines += [f"| {r['name']} | {r['status']} | {str(r.get('error', '')).replace('|', '/')} |" for r in others]
  lines += ["", "Files: `results.csv` (one row per trial), `pareto.png`, `learning_curves.png`, `trials/<name>/`."]
  return "\n".join(lines) + "\n"


def _figure(width=7.0, height=5.0):
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  figure = Figure(figsize=(width, height), dpi=110)
  FigureCanvasAgg(figure)
  return figure


def short_label(name: str) -> str:
  """'features=64-64,kernel_size=3' -> '64-64 k3' for plot labels."""
  return name.replace("features=", "").replace(",kernel_size=", " k").replace("kernel_size=", "k")


def plot_pareto(path: Path, rows: Sequence[ConfigResult], spot: ConfigResult | None, machine: str) -> None:
  figure = _figure()
  ax = figure.add_subplot()
  front = pareto_front(rows)
  for r in rows:
    ax.errorbar(r.seconds_mean, 100 * r.accuracy_mean, xerr=r.seconds_std, yerr=100 * r.accuracy_std, fmt="o",
                color="tab:red" if r in front else "tab:blue", capsize=3)  # fmt: skip
    ax.annotate(
      short_label(r.name),
      (r.seconds_mean, 100 * r.accuracy_mean),
      textcoords="offset points",
      xytext=(5, 5),
      fontsize=7,
    )
  ax.plot(
    [r.seconds_mean for r in front], [100 * r.accuracy_mean for r in front], "--", color="tab:red", label="Pareto front"
  )
  if spot is not None:
    ax.scatter(
      [spot.seconds_mean],
      [100 * spot.accuracy_mean],
      s=250,
      facecolors="none",
      edgecolors="black",
      label=f"sweet spot: {spot.name}",
    )
  ax.set_xlabel("seconds per epoch (compilation excluded)")
  ax.set_ylabel("test accuracy (%), mean ± std over seeds")
  ax.set_title(f"Accuracy vs speed\n{machine}", fontsize=8)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, loc="best")
  figure.tight_layout()
  figure.savefig(path)


def plot_learning_curves(path: Path, workdir: Path, results: Sequence[Mapping[str, Any]]) -> None:
  curves: dict[str, dict[int, list[float]]] = {}
  for r in results:
    if r.get("status") != "completed":
      continue
    for m in logs.read_jsonl(workdir / "trials" / r["name"] / logs.METRICS_FILE):
      curves.setdefault(config_name(r), {}).setdefault(m["epoch"], []).append(m["test_accuracy"])
  figure = _figure()
  ax = figure.add_subplot()
  for name, by_epoch in curves.items():
    epochs = sorted(by_epoch)
    ax.plot(epochs, [100 * statistics.fmean(by_epoch[e]) for e in epochs], marker="o", label=short_label(name))
  ax.set_xlabel("epoch")
  ax.set_ylabel("test accuracy (%), mean over seeds")
  ax.set_title("Learning curves")
  ax.grid(alpha=0.3)
  if curves:
    ax.legend(fontsize=6)
  figure.tight_layout()
  figure.savefig(path)


def write_report(
  workdir: str | Path, config: Mapping[str, Any] | None = None, results: Sequence[Mapping[str, Any]] | None = None
) -> str:
  """Writes results.csv, report.md, pareto.png and learning_curves.png into ``workdir``; returns report.md."""
  workdir = Path(workdir)
  config = config if config is not None else logs.read_json(workdir / logs.CONFIG_FILE) or {}
  if results is None:
    results = list({r["name"]: r for r in logs.read_jsonl(workdir / "results.jsonl")}.values())
  pixels = None
  if config.get("dataset"):
    from convnet import input_pipeline

    try:
      pixels = math.prod(input_pipeline.peek_shape(config["dataset"])[0])
    except (DataError, ConfigError):
      pass  # the data is gone; the report still stands without the pixel count
  write_csv(workdir / "results.csv", results)
  text = markdown(config, results, pixels)
  logs.atomic_write_text(workdir / "report.md", text)
  rows = aggregate(results)
  report_config = config.get("report", {})
  spot = (
    sweet_spot(rows, report_config.get("rule", "within_std"), report_config.get("tolerance", 0.005))[0]
    if rows
    else None
  )
  plot_pareto(workdir / "pareto.png", rows, spot, _machine(results))
  plot_learning_curves(workdir / "learning_curves.png", workdir, results)
  return text


def main(argv: Sequence[str]) -> None:
  if len(argv) != 2:
    print("usage: python -m convnet.report SWEEP_DIR", file=sys.stderr)
    sys.exit(2)
  workdir = Path(argv[1])
  if not (workdir / "results.jsonl").is_file():
    print(f"error: {workdir / 'results.jsonl'}: not found; run a sweep into {workdir} first", file=sys.stderr)
    sys.exit(1)
  try:
    print(write_report(workdir))
  except (ConfigError, DataError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  main(sys.argv)
