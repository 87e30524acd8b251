"""report.md's section on how a sweep spent its trials: what Pareto pruning or racing stopped, and the cost.

Pure: a function of the sweep's config, its result records and its answer (``convnet.results.markdown``
puts it in the report).
"""

from collections.abc import Mapping, Sequence
import dataclasses
from typing import Any

from convnet.results import analysis
from convnet.sweep import strategies


@dataclasses.dataclass(frozen=True)
class Pruned:
  """A configuration that Pareto pruning stopped: where, why, and its figures there (over its seeds)."""

  row: analysis.ConfigResult  # accuracy and s/epoch at the epoch it stopped
  epoch: int
  by: str
  accuracy_lead: float  # by's mean accuracy minus this one's, at that epoch
  margin: float
  speedup: float  # this one's s/epoch over by's


def pruned(results: Sequence[Mapping[str, Any]]) -> list[Pruned]:
  """The pruned configurations of a sweep's results (stopped with no seed completed), in the order they
  were stopped; a configuration racing kept on the front with fewer seeds is not one of them (:func:`trimmed`)."""
  first = {}
  completed = {r["configuration"] for r in results if r.get("status") == "completed"}
  for r in results:
    if r.get("status") == "pruned" and r["configuration"] not in completed:
      first.setdefault(r["configuration"], r)
  rows = {row.name: row for row in analysis.aggregate(results, "pruned")}
  return [
    Pruned(rows[name], int(r["pruned_at"]), r["pruned_by"], r["accuracy_lead"], r["prune_margin"], r["speedup"])
    for name, r in first.items()
  ]


def trimmed(results: Sequence[Mapping[str, Any]]) -> dict[str, tuple[int, int]]:
  """Configurations with seeds completed and seeds stopped (racing's ``front_seeds``): name -> (completed, stopped)."""
  counts: dict[str, list[int]] = {}
  for r in results:
    if r.get("status") in ("completed", "pruned"):
      counts.setdefault(r["configuration"], [0, 0])[r["status"] == "pruned"] += 1
  return {name: (done, stopped) for name, (done, stopped) in counts.items() if done and stopped}


def trial_epochs(results: Sequence[Mapping[str, Any]], num_epochs: int) -> tuple[int, int]:
  """(epochs trained, epochs the full grid trains) over the trials that trained (completed or pruned)."""
  trained = [r for r in results if r.get("status") in ("completed", "pruned")]
  return sum(int(r.get("epoch", 0)) for r in trained), num_epochs * len(trained)


def section(config: Mapping[str, Any], results: Sequence[Mapping[str, Any]], found=None) -> list[str]:
  """report.md's pruning section: the rule, what it stopped where and why, the trial-epochs saved."""
  stopped = pruned(results)
  prune = (config.get("sweep") or {}).get("prune") or {}
  if strategies.method(prune) is None and not stopped:
    return []
  if strategies.method(prune) == "race":
    return _racing(config, results, stopped, found)
  spent, full = trial_epochs(results, config.get("num_epochs", 0))
  rungs = ", ".join(map(str, prune.get("rungs", ()))) or "none"
  lines = [
    "",
    "## Pruning",
    "",
    f"Rule (`sweep.prune.method={prune.get('method')}`, rungs at epochs {rungs}): after each rung, a configuration stops when a "
    "faster one (s/epoch) that trains on is at least as accurate there within the seeds' noise: mean "
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
      f"| configuration | stopped after epoch | seeds | {stopped[0].row.split} accuracy % there | s/epoch | dominated by | its lead (points) | margin (points) | speedup |",
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


def _racing(config: Mapping[str, Any], results: Sequence[Mapping[str, Any]], stopped, found) -> list[str]:
  """report.md's racing section: the seeds each configuration trained, what stopped where, the cost."""
  sweep = config.get("sweep") or {}
  prune, pool = sweep.get("prune") or {}, len((sweep.get("axes") or {}).get("seeds") or (0,))
  epochs = config.get("num_epochs", 0)
  spent = sum(int(r.get("epoch", 0)) for r in results if r.get("status") in ("completed", "pruned"))
  seeds: dict[str, int] = {}
  for r in results:
    if r.get("status") in ("completed", "pruned"):
      seeds[r["configuration"]] = seeds.get(r["configuration"], 0) + 1
  full = epochs * pool * len(seeds)
  lines = [
    "",
    "## Racing",
    "",
    f"Every configuration started with {prune.get('initial_seeds', 2)} of the {pool} seeds of `sweep.axes.seeds`; at the "
    f"rungs (epochs {', '.join(map(str, prune.get('rungs', ()))) or 'none'}) a configuration that was the sweet spot in "
    f"fewer than {100 * prune.get('stop_below', 0.05):g}% of the draws over the seeds stopped when the Pareto front "
    f"without it kept {100 * (1 - prune.get('front_loss', 0.0)):g}% of its hypervolume in all but that share of the "
    f"draws, and one surely on the front but out of contention trained {prune.get('front_seeds') or 'all its'} seed(s) on "
    f"(speeds within {100 * prune.get('speed_margin', 0.05):g}% count as equal); then the configurations still in "
    "contention got more seeds until the answer was sure enough, the pool was used up or the budget "
    f"({prune.get('budget') or 'none'} trial-epochs) spent (src/convnet/sweep/racing.py).",
    "",
    f"Trial-epochs trained: {spent:,} of the {pool}-seed full grid's {full:,} ({100 * spent / full:.0f}%)."
    if full
    else "No trial has trained yet.",
    "Seeds trained: " + ", ".join(f"{name} {count}" for name, count in seeds.items()) + ".",
    _why_ended(found, seeds, pool, prune.get("budget")),
  ]
  if kept := trimmed(results):
    lines.append("Kept on the front with fewer seeds (its other seeds stopped at a rung): "
                 + ", ".join(f"{name} ({done} of {done + stopped})" for name, (done, stopped) in kept.items()) + ".")  # fmt: skip
  if stopped:
    lines += ["", "| configuration | stopped after epoch | seeds | why |", "|---|---|---|---|"]
    first = {}
    for r in results:
      if r.get("status") == "pruned":
        first.setdefault(r["configuration"], r)
    lines += [
      f"| {p.row.name} | {p.epoch} | {len(p.row.seeds)} | {first[p.row.name].get('error', '')} |" for p in stopped
    ]
  return lines


def _why_ended(found, seeds: Mapping[str, int], pool: int, budget) -> str:
  """Why racing stopped adding seeds."""
  if found is None or found.status in ("smoke check", "none"):
    return "It ended without an answer (no spread over seeds, or nothing above chance)."
  if found.status == "decided":
    return f"It ended when the answer was {100 * found.confidence:.0f}% sure."
  if "practically level" in found.settle or "would likely settle" in found.settle:
    return f"It ended undecided: {found.settle}; the pool of {pool} seeds would likely not settle it."
  if budget is None or all(seeds.get(name, 0) >= pool for name in found.contenders):
    return f"It ended undecided: the contenders have used up the pool of {pool} seeds (or their seeds failed)."
  return f"It ended undecided: the next seeds would have passed the budget ({budget} trial-epochs)."
