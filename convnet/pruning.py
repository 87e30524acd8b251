"""Pareto pruning's rule: which configurations a sweep can stop at a rung; and its replay on a full grid.

    python -m convnet.pruning --workdir=runs/sweep --rungs=1,2 --margin=1.0   # what the rule would do there

A configuration is *dominated* at a rung (after the same number of epochs for everyone) when a
faster configuration is at least as accurate as it there, within the noise of the seeds:

    faster.seconds < it.seconds  and  faster.accuracy_mean >= it.accuracy_mean - margin

with ``margin = prune_margin x max(it.std, faster.std)`` (standard deviations over seeds) when both have
two seeds or more, and ``margin = one_seed_margin`` (accuracy points, as a fraction) when either has one
seed only. Such a configuration can neither be the sweet spot nor add to the Pareto front anything the
seeds can tell apart. **Only a configuration that trains on can dominate**: the rule decides fastest
first, and a configuration stopped at this rung stops nothing. (The margin is not transitive: without
this, a chain of configurations, each inside the noise of the next faster one, stops the chain's far
end although it may be well ahead of every configuration left; the recorded ``:wide`` sweep did this
once.) So every stopped configuration has a dominator that goes on; of those, the verdict names the one
with the largest accuracy lead.

**Leaders are kept** (``keep_leaders``, the default): a configuration within the same margin of the
rung's most accurate one is never stopped, because it may still become the most accurate, and the most
accurate configuration sets the sweet spot's bar (``report.rule``: the fastest configuration within
noise of the best). Without this, the rule stops a slow configuration that is level with faster ones
early and pulls ahead later, the bar drops, and the sweet spot moves to a faster configuration: on the
recorded default grid (experiments/fashion_mnist_sweet_spot) the rule without it changes the answer in
every schedule tried that prunes after epoch 1, and keeps it at rungs 2 and 3 by 0.12 points only; with
it the answer holds in every schedule tried.

How a sweep uses it (``config.prune='pareto'``, ``convnet.sweep``): every trial trains to the first
rung (``config.prune_rungs``, epochs), the rule runs on each configuration's standing there (mean and
std test accuracy over the seeds that reached it; s/epoch the mean over seeds of each trial's median
epoch, compilation excluded), the dominated configurations' trials are recorded as ``pruned`` and go
no further; the others train on to the next rung, and so on up to ``num_epochs``. Standings are read
from the trials' own ``metrics.jsonl`` at the rung's epoch, so a resumed sweep decides exactly as the
interrupted one did. With one seed the spread is unknown, so the margin is a fixed number of points.
"""

from collections.abc import Mapping, Sequence
import dataclasses
import statistics
from typing import Any

from convnet.errors import ConfigError

METHODS = ("pareto",)

DEFAULT_MARGIN = 1.0  # standard deviations over seeds
ONE_SEED_MARGIN = 0.005  # accuracy (0.5 points) when a configuration has one seed: its spread is unknown


@dataclasses.dataclass(frozen=True)
class Standing:
  """A configuration after a rung: its mean and std test accuracy over seeds, seeds, s/epoch."""

  name: str
  accuracy_mean: float
  accuracy_std: float
  seeds: int
  seconds: float


@dataclasses.dataclass(frozen=True)
class Verdict:
  """Why a configuration is stopped: the faster one that dominates it, and by how much."""

  name: str
  by: str
  accuracy_lead: float  # by's mean accuracy minus the pruned one's (negative: inside the margin)
  margin: float
  speedup: float  # the pruned one's s/epoch over by's

  def text(self) -> str:
    return (
      f"{self.name}: {self.by} is {self.speedup:.2f}x faster and {100 * self.accuracy_lead:+.2f} points as accurate "
      f"(margin {100 * self.margin:.2f} points)"
    )


def margin(a: Standing, b: Standing, prune_margin: float = DEFAULT_MARGIN, one_seed: float = ONE_SEED_MARGIN) -> float:
  """The noise margin between two configurations' mean accuracies (see the module docstring)."""
  if a.seeds < 2 or b.seeds < 2:
    return one_seed
  return prune_margin * max(a.accuracy_std, b.accuracy_std)


def dominated(
  standings: Sequence[Standing],
  prune_margin: float = DEFAULT_MARGIN,
  one_seed: float = ONE_SEED_MARGIN,
  keep_leaders: bool = True,
) -> dict[str, Verdict]:
  """The configurations to stop at this rung, by name, each with its verdict (see the module docstring)."""
  if prune_margin < 0 or one_seed < 0:
    raise ValueError(f"prune margins must be >= 0; got {prune_margin} std and {one_seed} for one seed")
  leader = max(standings, key=lambda s: s.accuracy_mean, default=None)
  out, kept = {}, []
  for it in sorted(standings, key=lambda s: s.seconds):  # fastest first: its possible dominators are decided
    if keep_leaders and leader.accuracy_mean - it.accuracy_mean <= margin(it, leader, prune_margin, one_seed):
      kept.append(it)  # it may still become the most accurate: the sweet spot's bar
      continue
    verdicts = [
      Verdict(it.name, other.name, other.accuracy_mean - it.accuracy_mean, gap, it.seconds / other.seconds)
      for other in kept
      if other.seconds < it.seconds
      and other.accuracy_mean >= it.accuracy_mean - (gap := margin(it, other, prune_margin, one_seed))
    ]
    if verdicts:
      out[it.name] = max(verdicts, key=lambda v: (v.accuracy_lead, v.speedup))
    else:
      kept.append(it)
  return out


def method(config: Mapping[str, Any]) -> str | None:
  """``config.prune``: None (also 'none', as a command line gives it) or one of METHODS; else ConfigError."""
  value = config.get("prune")
  if value is None or (isinstance(value, str) and value.lower() == "none"):
    return None
  if value not in METHODS:
    raise ConfigError(f"prune={value!r} is not allowed; use None (the full grid) or one of {METHODS}")
  return value


def rungs(config: Mapping[str, Any]) -> list[int]:
  """The epochs at which ``config`` prunes before its last (empty without ``prune``); ConfigError if bad."""
  if method(config) is None:
    return []
  values = config.get("prune_rungs")
  if (
    not isinstance(values, (tuple, list))
    or not values
    or any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in values)
  ):
    raise ConfigError(f"prune_rungs={values!r}: give a tuple of epochs >= 1, e.g. '(1,2)'")
  if not isinstance(config.get("prune_keep_leaders", True), bool):
    raise ConfigError(f"prune_keep_leaders={config.get('prune_keep_leaders')!r}: give True or False")
  for field in ("prune_margin", "prune_one_seed_margin"):
    value = config.get(field, 0.0)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
      raise ConfigError(f"{field}={value!r}: give a number >= 0")
  return sorted({v for v in values if v < config["num_epochs"]})


def standing(name: str, seeds: Sequence[tuple[float, float]]) -> Standing:
  """A configuration's standing from its seeds' (test accuracy, median s/epoch) at a rung."""
  accuracy = [a for a, _ in seeds]
  return Standing(
    name,
    statistics.fmean(accuracy),
    statistics.stdev(accuracy) if len(accuracy) > 1 else 0.0,
    len(seeds),
    statistics.fmean(s for _, s in seeds),
  )


@dataclasses.dataclass(frozen=True)
class Replay:
  """What pruning would have done to a finished full-grid sweep (its trials trained every epoch)."""

  stopped: dict[str, tuple[int, Verdict]]  # trial name -> (rung, verdict)
  full_spot: str | None
  pruned_spot: str | None
  epochs: tuple[int, int]  # (trial-epochs with pruning, without)
  train_seconds: tuple[float, float]  # (training seconds, summed over those epochs, with and without)
  left_out: tuple[str, ...] = ()  # configurations of the sweep that did not finish (pruned, failed)

  def text(self) -> str:
    lines = list(dict.fromkeys(f"epoch {rung}: {verdict.text()}" for rung, verdict in self.stopped.values()))
    used, full = self.epochs
    seconds, all_seconds = self.train_seconds
    same = "the same" if self.full_spot == self.pruned_spot else "a DIFFERENT"
    lines += [
      f"sweet spot: full grid {self.full_spot}; pruned {self.pruned_spot} ({same} answer)",
      f"trial-epochs: {used} of {full} ({100 * used / full:.0f}%); training seconds: {seconds:.0f} of "
      f"{all_seconds:.0f} ({100 * seconds / all_seconds:.0f}%, compilation and evaluation excluded)",
    ]
    if self.left_out:
      lines.append(
        f"note: not a full grid: {len(self.left_out)} configuration(s) did not finish there (pruned or failed) and are "
        "left out; the replay treats the finished ones as the whole grid"
      )
    return "\n".join(lines)


def replay(
  workdir,
  rungs_: Sequence[int],
  prune_margin: float = DEFAULT_MARGIN,
  one_seed: float = ONE_SEED_MARGIN,
  keep_leaders: bool = True,
) -> Replay:
  """Runs the rule on a full-grid sweep's recorded epochs (each trial's metrics.jsonl), as a pruned sweep
  with these rungs would have: which configurations stop where, and whether the sweet spot moves."""
  from pathlib import Path

  from convnet import analysis, logs, report, sweep

  workdir = Path(workdir)
  config = logs.read_json(workdir / logs.CONFIG_FILE) or {}
  results = report.read_results(workdir)
  completed = [r for r in results if r.get("status") == "completed"]
  finished = {analysis.config_name(r) for r in completed}
  left_out = tuple(sorted({analysis.config_name(r) for r in results} - finished))
  alive = [r["name"] for r in completed]
  stopped: dict[str, tuple[int, Verdict]] = {}
  last_epoch = config.get("num_epochs") or max((int(r["epoch"]) for r in completed), default=0)
  for rung in sorted(r for r in set(rungs_) if r < last_epoch):  # as the sweep: a rung at the end is no rung
    verdicts = dominated(sweep.standings(workdir, alive, rung), prune_margin, one_seed, keep_leaders)
    for name in alive:
      if (verdict := verdicts.get(analysis.config_name({"name": name}))) is not None:
        stopped[name] = (rung, verdict)
    alive = [name for name in alive if name not in stopped]

  def spot(records) -> str | None:
    chosen = analysis.chosen_sweet_spot(analysis.aggregate(records), config)[0]
    return chosen.name if chosen else None

  def trained(name: str, through: int) -> list[float]:
    return [m["epoch_seconds"] for m in sweep.epochs(workdir, name) if m["epoch"] <= through]

  last = {r["name"]: int(r["epoch"]) for r in completed}
  through = {name: stopped[name][0] if name in stopped else last[name] for name in last}
  return Replay(
    stopped,
    spot(completed),
    spot([r for r in completed if r["name"] in alive]),
    (sum(through.values()), sum(last.values())),
    (sum(sum(trained(n, e)) for n, e in through.items()), sum(sum(trained(n, e)) for n, e in last.items())),
    left_out,
  )


def define_flags(values) -> None:
  from absl import flags

  flags.DEFINE_string(
    "workdir",
    None,
    "A finished full-grid sweep directory (of a pruned one, the replay reads its finishers only, and says so).",
    flag_values=values,
  )
  flags.DEFINE_list("rungs", ["1", "2"], "Epochs to prune at, e.g. 1,2.", flag_values=values)
  flags.DEFINE_float("margin", DEFAULT_MARGIN, "prune_margin: standard deviations over seeds.", flag_values=values)
  flags.DEFINE_float("one_seed_margin", ONE_SEED_MARGIN, "prune_one_seed_margin (accuracy).", flag_values=values)
  flags.DEFINE_bool("keep_leaders", True, "prune_keep_leaders: never stop one level with the best.", flag_values=values)
  flags.mark_flag_as_required("workdir", flag_values=values)


def main(values) -> None:
  from pathlib import Path

  from convnet import report
  from convnet.errors import DataError

  if not (Path(values.workdir) / report.RESULTS_FILE).is_file():
    raise DataError(f"{Path(values.workdir) / report.RESULTS_FILE}: not found; run a full-grid sweep there first")
  try:
    rung_values = [int(v) for v in values.rungs]
  except ValueError:
    raise ConfigError(f"--rungs={','.join(values.rungs)}: give epochs as integers >= 1, e.g. 1,2") from None
  if not rung_values or min(rung_values) < 1 or values.margin < 0 or values.one_seed_margin < 0:
    raise ConfigError("--rungs takes epochs >= 1 and the margins numbers >= 0")
  print(replay(values.workdir, rung_values, values.margin, values.one_seed_margin, values.keep_leaders).text())


if __name__ == "__main__":
  from convnet import cli

  cli.run(main, define_flags)
