"""report.md's text: how the trials ran, the sweet spot, the table of configurations, pruning, failures.

Pure: a function of the sweep's config and its result records (``convnet.results.analysis`` computes
the numbers); ``convnet.results.report`` writes it.
"""

from collections.abc import Mapping, Sequence
import statistics
from typing import Any

from convnet.results import analysis
from convnet.rundir import provenance
from convnet.sweep import strategies


def markdown(
  config: Mapping[str, Any],
  results: Sequence[Mapping[str, Any]],
  input_pixels: int | None = None,
  fixed: Sequence[float] = (),
) -> str:
  """report.md's text (``fixed``: seconds per trial outside its epochs, ``SweepStore.fixed_costs``)."""
  rows = analysis.aggregate(results)
  front = {r.name for r in analysis.pareto_front(rows)}
  rule = analysis.report_settings(config).get("rule", "within_std")
  dataset = config.get("dataset", {})
  lines = [
    "# Sweep report",
    "",
    f"Timings from: {machine(results)}. Seconds per epoch exclude compilation; each trial's figure is the",
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
        f"Rule (`sweep.report.rule={rule}`): {why}.",
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
  prune = (config.get("sweep") or {}).get("prune") or {}
  if strategies.method(prune) is None and not stopped:
    return []
  spent, full = analysis.trial_epochs(results, config.get("num_epochs", 0))
  rungs = ", ".join(map(str, prune.get("rungs", ()))) or "none"
  lines = [
    "",
    "## Pruning",
    "",
    f"Rule (`sweep.prune.method={prune.get('method')}`, rungs at epochs {rungs}): after each rung, a configuration stops when a "
    "faster one (s/epoch) that trains on is at least as accurate there within the seeds' noise: mean test "
    f"accuracy >= its own mean - {prune.get('margin', 1.0):g} x the larger of the two standard deviations over seeds "
    f"(`sweep.prune.margin`; with one seed, {100 * prune.get('one_seed_margin', 0.005):.2f} points, "
    "`sweep.prune.one_seed_margin`)"
    + (
      "; a configuration within that margin of the rung's most accurate one is kept (`sweep.prune.keep_leaders`): it "
      "may still become the most accurate, which sets the sweet spot's bar"
      if prune.get("keep_leaders", True)
      else "; leaders are not kept (`sweep.prune.keep_leaders=False`)"
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


def machine(results: Sequence[Mapping[str, Any]]) -> str:
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
