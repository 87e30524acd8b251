"""How well a strategy answers, measured on a reference grid: replays over random seed orders.

The reference is a finished full grid with many seeds per configuration (e.g. 8): its answer (the
sweet spot by the config's rule, with its confidence, from every seed) stands for the truth. A
strategy is replayed on it (``convnet.sweep.replay``) once per seed order: each configuration's seeds
taken in a random order (a fixed generator, :func:`evaluate`'s ``seed``), as if those had been the
seeds the sweep drew. Per order:

* **the answer**: the strategy's answer from the trials it completed, with its confidence
  (``convnet.results.confidence``): the reference answer, another configuration (decided but wrong),
  or undecided; where the reference itself is undecided, how many undecided answers name exactly its
  contenders, and how many name them among others;
* **the cost**: trial-epochs and training seconds (the recorded epochs' times), against the full grid
  with ``baseline_seeds`` seeds per configuration (the first seeds of the same order); the strategy
  takes at most ``pool`` seeds per configuration (the config's ``sweep.axes.seeds``), the first ones
  of the order;
* **the front**: the hypervolume of the front it finds, against the reference front's, beside the
  same ratio for the full ``baseline_seeds`` grid's front. Both are measured on the *reference*
  figures (every seed's mean) of their configurations, so the ratio says whether it kept the
  configurations that make the front, not how its noisier estimates happen to fall. Hypervolume is in
  (log2 seconds per epoch, accuracy) up to ``convnet.results.volume.reference_point`` of the
  reference grid's configurations (each objective's worst value moved out by a tenth of its range).
"""

import collections
import dataclasses
import math
import statistics

import numpy as np

from convnet.results import analysis, confidence, volume
from convnet.sweep import replay
from convnet.sweep.seam import Step, Strategy


@dataclasses.dataclass(frozen=True)
class Evaluation:
  """A strategy's replays on a reference grid (see the module)."""

  reference: confidence.Answer
  orders: int
  named: int  # orders whose answer is the reference answer, decided
  wrong: int  # decided on another configuration
  undecided: int
  trial_epochs: list[int]
  baseline_epochs: int
  train_seconds: list[float]
  baseline_seconds: list[float]
  hypervolume: list[float]  # ratios to the reference front's
  baseline_hypervolume: list[float]  # the same for the full grid with baseline_seeds seeds, in the same order
  answers: list[str]  # per order: the configuration named, or 'undecided: a, b'
  pool: int  # seeds the strategy could take per configuration

  def text(self) -> str:
    epochs = statistics.fmean(self.trial_epochs)
    seconds = statistics.fmean(s / b for s, b in zip(self.train_seconds, self.baseline_seconds, strict=True))
    return "\n".join([
      f"reference answer: {self.reference.text()}",
      f"replayed over {self.orders} seed orders: the reference answer in {self.named} ({100 * self.named / self.orders:.0f}%), "
      f"another configuration in {self.wrong} ({100 * self.wrong / self.orders:.0f}%), undecided in {self.undecided} "
      f"({100 * self.undecided / self.orders:.0f}%){self._as_undecided()}",
      f"trial-epochs: mean {epochs:.1f} ({100 * epochs / self.baseline_epochs:.0f}% of the full grid's "
      f"{self.baseline_epochs}), range {min(self.trial_epochs)}-{max(self.trial_epochs)}; training seconds: "
      f"mean {100 * seconds:.0f}% of the full grid's in the same order",
      f"front hypervolume / reference: mean {statistics.fmean(self.hypervolume):.3f}, min {min(self.hypervolume):.3f} "
      f"(the full grid's: mean {statistics.fmean(self.baseline_hypervolume):.3f}, min {min(self.baseline_hypervolume):.3f})",
      "answers: " + "; ".join(f"{name} x{count}" for name, count in collections.Counter(self.answers).most_common()),
    ])  # fmt: skip

  def _as_undecided(self) -> str:
    """Where the reference is undecided: how many undecided answers name its contenders (alone, or among others)."""
    if self.reference.status != "undecided":
      return ""
    theirs = set(self.reference.contenders)
    named = [set(a.removeprefix("undecided: ").split(", ")) for a in self.answers if a.startswith("undecided: ")]
    exact, among = sum(n == theirs for n in named), sum(n > theirs for n in named)
    return (
      f"; the reference is undecided too: {exact} ({100 * exact / self.orders:.0f}%) undecided between exactly its "
      f"contenders, {among} ({100 * among / self.orders:.0f}%) between them and others"
    )


def evaluate(
  reference: replay.Grid,
  strategy: Strategy,
  orders: int = 50,
  baseline_seeds: int = 3,
  seed: int = 0,
  rule: tuple | None = None,
  pool: int | None = None,
) -> Evaluation:
  """``strategy`` replayed on ``reference`` over ``orders`` random seed orders (see the module); ``rule``:
  ``confidence.settings_of``'s tuple, by default the reference config's."""
  rule = rule or confidence.settings_of(reference.config)
  everything = analysis.aggregate(list(reference.records.values()))
  truth = confidence.answer(everything, *rule)
  by_name = {r.name: r for r in everything}
  ref_point = volume.reference_point(
    [math.log2(r.seconds_mean) for r in everything], [r.accuracy_mean for r in everything]
  )

  def covered(names) -> float:
    return volume.hypervolume(
      [(math.log2(by_name[n].seconds_mean), by_name[n].accuracy_mean) for n in names], ref_point
    )

  full_volume = covered(r.name for r in analysis.pareto_front(everything))

  def front_share(rows) -> float:
    return covered(r.name for r in analysis.pareto_front(rows)) / full_volume if full_volume else 1.0

  rng = np.random.default_rng(seed)
  named = wrong = undecided = 0
  epochs, seconds, baseline, volumes, grid_volumes, answers = [], [], [], [], [], []
  for _ in range(orders):
    order = {name: rng.permutation(len(trials)).tolist() for name, trials in reference.configurations.items()}
    board = reference.board({name: seeds[:pool] for name, seeds in order.items()}).run(strategy)
    rows = analysis.aggregate(board.completed_records(reference.records))
    found = confidence.answer(rows, *rule)
    if found.status == "decided" and found.sweet_spot == truth.sweet_spot:
      named += 1
    elif found.status == "decided":
      wrong += 1
    else:
      undecided += 1
    answers.append(
      found.sweet_spot if found.status == "decided" else "undecided: " + ", ".join(sorted(found.contenders))
    )
    epochs.append(board.trial_epochs())
    seconds.append(board.train_seconds())
    first = reference.board(order)
    first.apply(Step(train={t: reference.num_epochs for ts in first.configurations.values()
                                   for t in ts[:baseline_seeds]}))  # fmt: skip
    baseline.append(first.train_seconds())
    volumes.append(front_share(rows))
    grid_volumes.append(front_share(analysis.aggregate(first.completed_records(reference.records))))
  return Evaluation(truth, orders, named, wrong, undecided, epochs,
                    reference.num_epochs * baseline_seeds * len(reference.configurations), seconds, baseline,
                    volumes, grid_volumes, answers, pool or max(map(len, reference.configurations.values())))  # fmt: skip
