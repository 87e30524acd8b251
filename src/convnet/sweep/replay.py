"""A decision rule run again on a finished sweep's records: what Pareto pruning would have done there.

``python -m convnet.pruning --workdir=runs/sweep --rungs=1,2 --margin=1.0`` prints it (``convnet.pruning``).

It reads each trial's recorded epochs (``trials/<name>/metrics.jsonl``) and calls the same rule as the
live sweep (``convnet.sweep.strategies``), rung by rung: which configurations would have stopped where,
the trial-epochs and training seconds that would have cost, and whether the sweet spot moves.
"""

from collections.abc import Sequence
import dataclasses

from convnet.errors import DataError
from convnet.results import analysis
from convnet.sweep import store as sweep_store
from convnet.sweep import strategies
from convnet.sweep.strategies import DEFAULT_MARGIN, ONE_SEED_MARGIN, Verdict


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
  rungs: Sequence[int],
  prune_margin: float = DEFAULT_MARGIN,
  one_seed: float = ONE_SEED_MARGIN,
  keep_leaders: bool = True,
) -> Replay:
  """Runs the rule on a full-grid sweep's recorded epochs (each trial's metrics.jsonl), as a pruned sweep
  with these rungs would have: which configurations stop where, and whether the sweet spot moves.
  DataError if the sweep has no completed trial to replay."""
  store = sweep_store.open_existing(workdir)
  config = store.config() or {}
  results = store.results()
  completed = [r for r in results if r.get("status") == "completed"]
  if not completed:
    raise DataError(f"{store.results_path}: no completed trial to replay the rule on; finish the sweep first")
  configuration_of = {r["name"]: r["configuration"] for r in completed}
  left_out = tuple(sorted({r["configuration"] for r in results} - set(configuration_of.values())))
  alive = [r["name"] for r in completed]
  stopped: dict[str, tuple[int, Verdict]] = {}
  last_epoch = config.get("num_epochs") or max(int(r["epoch"]) for r in completed)
  for rung in sorted(r for r in set(rungs) if r < last_epoch):  # as the sweep: a rung at the end is no rung
    figures = store.rung_figures(((name, configuration_of[name]) for name in alive), rung)
    verdicts = strategies.dominated(strategies.standings(figures), prune_margin, one_seed, keep_leaders)
    for name in alive:
      if (verdict := verdicts.get(configuration_of[name])) is not None:
        stopped[name] = (rung, verdict)
    alive = [name for name in alive if name not in stopped]

  def spot(records) -> str | None:
    chosen = analysis.chosen_sweet_spot(analysis.aggregate(records), config)[0]
    return chosen.name if chosen else None

  def trained(name: str, through: int) -> list[float]:
    return [m["epoch_seconds"] for m in store.epochs(name) if m["epoch"] <= through]

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
