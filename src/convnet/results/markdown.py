"""report.md's text: how the trials ran, the sweet spot, the table of configurations, pruning, failures.

Pure: a function of the sweep's config and its result records (``convnet.results.analysis`` computes
the numbers); ``convnet.results.report`` writes it.
"""

from collections.abc import Mapping, Sequence
import statistics
from typing import Any

from convnet.errors import DataError
from convnet.results import analysis, confidence, speeds, spending, tuning
from convnet.rundir import provenance


def markdown(
  config: Mapping[str, Any],
  results: Sequence[Mapping[str, Any]],
  input_pixels: int | None = None,
  fixed: Sequence[float] = (),
  outside: Sequence[Mapping[str, Any]] = (),
) -> str:
  """report.md's text (``fixed``: seconds per trial outside its epochs, ``SweepStore.fixed_costs``;
  ``outside``: trials recorded in the directory outside the config's grid, listed and left out)."""
  speed = speeds.speed_of(config)
  every = analysis.aggregate(results, speed=speed)
  sweep = config.get("sweep") or {}
  rows, tuned_away = tuning.tune(every, sweep.get("tuned") or ())
  front = {r.name for r in analysis.pareto_front(rows)}
  dataset = config.get("dataset", {})
  split = analysis.split_name(analysis.accuracy_key(results))
  swept = {name: values for name, values in (sweep.get("axes") or {}).items()}

  def value(field: str) -> str:
    return "swept" if any(tuning.is_axis(field, a) for a in swept) else str(config.get(field))

  lines = [
    "# Sweep report",
    "",
    f"Timings from: {machine(results)}. Seconds per epoch exclude compilation; each trial's figure is the",
    "median over its epochs, then mean ± std over seeds (n=1: one seed, spread unknown). " + _how_run(results),
    f"Epochs: {value('num_epochs')}, batch size {value('batch_size')}, {value('optimizer')} "
    f"{value('learning_rate')}; data: {dataset.get('name')} ({dataset.get('num_train_examples') or 'all'} "
    f"train / {dataset.get('num_test_examples') or 'all'} test images).",
    "Swept: "
    + "; ".join(f"{name} {_values(values)}" for name, values in swept.items())
    + "."
    + (
      f" Tuned per architecture on {split} accuracy (not a cost; the front and the sweet spot see each "
      f"architecture's best): {', '.join(sweep.get('tuned'))}."
      if sweep.get("tuned")
      else ""
    ),
    (
      f"Decisions (the front, the sweet spot, pruning) read validation accuracy: {_count(dataset.get('validation_size'))} "
      "images held out of training (`dataset.validation_size`); test accuracy is reported and decides nothing."
      if split == "validation"
      else "**Note:** recorded before the validation split: decisions here read test accuracy (the only one recorded)."
    ),
    "Code: "
    + ("; ".join(provenance.distinct(results, lambda r: provenance.code_label(r.get("code")))) or "none")
    + ".",
  ]
  if fixed:
    lines.append(
      f"Time per trial outside its epochs (data, model, compilation, evaluation, checkpoints, inference timing; summary.json's "
      f"total - train seconds of the {len(fixed)} trial(s) trained in one go): median {statistics.median(fixed):.2f} s "
      f"({min(fixed):.2f}-{max(fixed):.2f})."
    )
  for warning in provenance.differences(results) + _contention(results):
    lines += ["", f"**Warning:** {warning}; compare timings only among trials that share them."]
  if rows:
    spot, _ = analysis.chosen_sweet_spot(rows, config)
    found = confidence.answer(rows, *confidence.settings_of(config))
    lines += _answer(rows, found)
    tested = split != "test"
    inferred = any(r.latency_ms is not None for r in every)
    lines += [
      "",
      f"| configuration | seeds | {split} accuracy % |"
      + (" test accuracy % |" if tested else "")
      + " s/epoch |"
      + (" latency ms | images/s |" if inferred else "")
      + " examples/s | params | MFLOP/example | flattened | Pareto |",
      "|---|---|---|" + ("---|" if tested else "") + ("---|---|" if inferred else "") + "---|---|---|---|---|---|",
    ]
    for r in sorted(every, key=lambda r: r.cost_mean):
      mark = "**yes**" if r.name in front else (f"tuned away: {tuned_away[r.name]}" if r.name in tuned_away else "")
      star = " ★" if spot is not None and r.name == spot.name else ""
      seconds = f"{r.seconds_mean:.2f} ± {r.seconds_std:.2f}" if len(r.seeds) > 1 else f"{r.seconds_mean:.2f}"
      lines.append(
        f"| {r.name}{star} | {len(r.seeds)} | {analysis.accuracy_text(r).replace('%', '')} | "
        + (f"{analysis.test_text(r).replace('%', '')} | " if tested else "")
        + f"{seconds} | "
        + (f"{_or_dash(r.latency_ms, '.3f')} | {_or_dash(r.throughput, ',.0f')} | " if inferred else "")
        + f"{r.examples_per_second:,.0f} | {r.num_params:,} | {r.flops_per_example / 1e6:.2f} | {r.flatten_size:,} | {mark} |"
      )
    lines += ["", "Pareto front (fastest first): " + " → ".join(r.name for r in analysis.pareto_front(rows)) + "."]
    if inferred:
      lines.append(
        "Latency: one image per call, median over calls after warm-up; images/s at `inference.batch_size` images per "
        "call; each on the device the trial trained on (convnet.inference), mean over seeds."
      )
    if input_pixels:
      lines.append(f"Flattened = the feature vector entering the dense layers (input: {input_pixels:,} pixels).")
    lines += _each_speed(results, config)
  else:
    found = None
    lines += ["", "No completed trials yet."]
  lines += spending.section(config, results, found)
  others = [r for r in results if r.get("status") not in ("completed", "pruned")]
  if others:
    lines += ["", "## Trials not completed", "", "| trial | status | reason |", "|---|---|---|"]
    lines += [f"| {r['name']} | {r['status']} | {str(r.get('error', '')).replace('|', '/')} |" for r in others]
  if outside:
    lines += [
      "",
      f"**{len(outside)} recorded trial(s) outside this config's grid are left out of everything above** (recorded in "
      "this directory by an earlier config): " + ", ".join(r["name"] for r in outside) + ".",
    ]
  lines += ["", "Files: `results.csv` (one row per trial), the plots, `trials/<name>/` (each trial's run)."]
  return "\n".join(lines) + "\n"


def _answer(rows: Sequence[analysis.ConfigResult], found: confidence.Answer) -> list[str]:
  """The answer: the sweet spot and how sure it is, the rule in words, and what the other rules pick."""
  rule = found.rule
  if found.status == "none":
    return ["", "**No sweet spot: no configuration completed above chance accuracy.**"]
  by_name = {r.name: r for r in rows}
  spot, tested = by_name[found.sweet_spot], found.split != "test"
  figures = (
    f"{analysis.accuracy_text(spot)} {found.split} accuracy"
    + (f" (test: {analysis.test_text(spot)})" if found.split != "test" else "")
    + f" at {spot.seconds_mean:.2f} s/epoch"
    + (f", {speeds.speed_text(spot.speed, spot.cost_mean)} ({spot.speed})" if spot.speed != "train_time" else "")
    + f", {spot.num_params:,} parameters"
  )
  if found.status == "smoke check":
    lines = ["", f"**Smoke check, not an answer** — {found.text()}.", f"The rule's pick: {spot.name}, {figures}."]
  elif found.status == "undecided":
    lines = [
      "",
      f"**Sweet spot: undecided** — {found.text()}.",
      f"The rule's pick on the means: {spot.name}, {figures}.",
    ]
  else:
    lines = ["", f"**Sweet spot: {spot.name}** — {figures}; chosen in {100 * found.share:.0f}% of draws over the seeds "
             f"(decided at {100 * found.confidence:.0f}%)."]  # fmt: skip
  lines += [
    f"Rule (`sweep.report.rule={rule}`, fast = `sweep.report.speed={spot.speed}`): {found.rule_text}.",
    f"How sure: the rule run on {confidence.DRAWS:,} draws of each configuration's mean from its seeds (Student's t "
    "posterior; convnet.results.confidence).",
    "",
    f"| | configuration | {found.split} accuracy % |"
    + (" test accuracy % |" if tested else "")
    + f" {_SPEED_COLUMNS[spot.speed]} | picked in (draws) | on the front (draws) |",
    "|---|---|---|" + ("---|" if tested else "") + "---|---|---|",
  ]
  picks = [("**sweet spot**", found.sweet_spot), ("most accurate", found.most_accurate)]
  picks += [(f"`{other}` would pick", name) for other, name in found.others.items()]
  for what, name in picks:
    row = by_name[name]
    chosen = f"{100 * found.shares.get(name, 0.0):.0f}%" if found.shares else "-"
    front = f"{100 * found.on_front[name]:.0f}%" if found.on_front else "-"
    test = f"{analysis.test_text(row).replace('%', '')} | " if tested else ""
    lines.append(f"| {what} | {name} | {analysis.accuracy_text(row).replace('%', '')} | {test}"
                 f"{speeds.speed_text(row.speed, row.cost_mean)} | {chosen} | {front} |")  # fmt: skip
  return lines


_SPEED_COLUMNS = {"train_time": "s/epoch", "latency": "latency", "throughput": "throughput", "flops": "FLOPs",
                  "params": "params"}  # fmt: skip


def _or_dash(value: float | None, spec: str) -> str:
  return "-" if value is None else format(value, spec)


def _each_speed(results: Sequence[Mapping[str, Any]], config: Mapping[str, Any]) -> list[str]:
  """The answer under each meaning of "fast" (``convnet.results.speeds``): does the sweet spot depend on it?"""
  lines = ["", "## The answer under each meaning of fast", "",
           "| fast (`sweep.report.speed`) | the rule's pick on the means | picked in (draws) | answer |",
           "|---|---|---|---|"]  # fmt: skip
  picks = set()
  for speed, (field, words) in speeds.SPEEDS.items():
    try:
      rows = tuning.decided_rows(results, {**config, "sweep": {**(config.get("sweep") or {}), "report": {
        **analysis.report_settings(config), "speed": speed}}})  # fmt: skip
    except DataError:
      lines.append(f"| `{speed}`: {words} | not recorded (`{field}`) | - | - |")
      continue
    found = confidence.answer(rows, *confidence.settings_of(config))
    share = f"{100 * found.share:.0f}%" if found.share is not None else "-"
    mark = " (this report)" if speed == speeds.speed_of(config) else ""
    lines.append(f"| `{speed}`{mark}: {words} | {found.sweet_spot or '-'} | {share} | {found.status} |")
    picks.add(found.sweet_spot)
  verdict = (
    "the same configuration under every measure recorded" if len(picks) == 1 else "it depends on what fast means"
  )
  return lines + ["", f"The rule's pick: {verdict}."]


def _values(values: Sequence[Any]) -> str:
  """An axis' values for the header: '(16-16, 32-32)'."""

  def one(v: Any) -> str:
    return "-".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)

  return "(" + ", ".join(one(v) for v in values) + ")"


def _count(value: Any) -> str:
  return f"{value:,}" if isinstance(value, int) else "the"


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
