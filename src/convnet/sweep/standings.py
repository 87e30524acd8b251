"""What the draws over the seeds say at one of racing's decisions (``convnet.sweep.racing``).

At a rung or after the last epoch, each configuration's (validation accuracy, s/epoch) per seed become
draws of their means (``convnet.results.confidence``: pooled spread, Student's t), and the draws give each
configuration its share as the sweet spot (by the report's rule) and on the Pareto front, the
configurations the front can do without (``convnet.results.volume``: its hypervolume), and, where
configurations differ in axes that are not costs (``sweep.tuned``), how often each beats its
architecture's best setting.
"""

from collections.abc import Mapping, Sequence
import dataclasses
import functools
import math
import statistics

import numpy as np

from convnet.results import analysis, confidence, tuning, volume


def row(name: str, figures: Sequence[tuple[float, float]], num_classes: int = 0) -> analysis.ConfigResult:
  """A configuration's figures (accuracy, s/epoch per seed) as the analysis' row."""
  accuracy, seconds = [a for a, _ in figures], [s for _, s in figures]
  return analysis.ConfigResult(
    name=name, trials=(), seeds=tuple(range(len(figures))), accuracy_mean=statistics.fmean(accuracy),
    accuracy_std=statistics.stdev(accuracy) if len(accuracy) > 1 else 0.0, seconds_mean=statistics.fmean(seconds),
    seconds_std=statistics.stdev(seconds) if len(seconds) > 1 else 0.0, examples_per_second=0.0, num_params=0,
    flops_per_example=0, flatten_size=0, num_classes=num_classes, accuracies=tuple(accuracy), seconds=tuple(seconds),
  )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Chances:
  """Each configuration's share of draws as the sweet spot and on the front; the rule's pick on the means."""

  spot: dict[str, float]
  front: dict[str, float]
  pick: str | None
  means: dict[str, tuple[float, float]]  # name -> (mean accuracy, mean s/epoch)
  spare: tuple[str, ...] = ()  # not the sweet spot, and the front keeps its hypervolume without them (see next)
  kept: dict[str, float] = dataclasses.field(default_factory=dict)  # of spare: draws keeping it, with the earlier ones
  # configurations with a tuned axis that are not their architecture's best on the means: name -> (that best,
  # the share of draws in which they beat it)
  beats: dict[str, tuple[str, float]] = dataclasses.field(default_factory=dict)

  @property
  def share(self) -> float:
    return self.spot.get(self.pick, 0.0) if self.pick else 0.0


@functools.lru_cache(maxsize=4096)
def weigh(race, figures: tuple, num_classes: int, named: tuple) -> Chances:
  """:class:`Chances` at one decision (see the module); ``race``: the racing settings (``convnet.sweep.racing.Racing``),
  ``figures``: ((configuration, ((accuracy, s/epoch), ...)), ...), ``named``: ((configuration, architecture), ...).
  Kept for the same arguments: every call to the strategy works the earlier decisions out again."""
  return _weigh(race, dict(figures), num_classes, named)


def _tuned(rows: Sequence[analysis.ConfigResult], architectures: Mapping[str, str]):
  """(each architecture's best row on the means, the others -> that best's name, best -> its architecture's
  configurations); every row its own architecture where ``architectures`` does not say."""
  chosen, beats = tuning.best_per(rows, lambda r: architectures.get(r.name, r.name))
  members: dict[str, list[str]] = {}
  for r in rows:
    members.setdefault(beats.get(r.name, r.name), []).append(r.name)
  return chosen, beats, members


def _weigh(race, figures: Mapping[str, Sequence[tuple[float, float]]], num_classes: int, named) -> Chances:
  every = [row(name, f, num_classes) for name, f in figures.items()]
  everyone = [r for r in every if not r.at_chance]
  means = {r.name: (r.accuracy_mean, r.seconds_mean) for r in every}
  if not everyone:
    return Chances({r.name: 0.0 for r in every}, {r.name: 0.0 for r in every}, None, means)
  rows, beats, members = _tuned(everyone, dict(named))
  pick = analysis.sweet_spot(rows, race.rule, race.tolerance, race.per_doubling)[0].name
  drawn = confidence.draws(rows)
  chance = {r.name: 0.0 for r in every if r.at_chance}
  beats = {name: (best, 1.0) for name, best in beats.items()}
  if drawn is None:  # no spread known yet: nothing can be ruled out
    fair = {r.name: 1.0 for r in rows} | {name: 0.0 for name in beats} | chance
    return Chances(fair, dict(fair), pick, means, beats=beats)
  if beats:  # each against its architecture's best, in draws over every configuration
    column = {r.name: i for i, r in enumerate(everyone)}
    tried = confidence.draws(everyone)[0]
    beats = {
      name: (best, float((tried[:, column[name]] > tried[:, column[best]]).mean())) for name, (best, _) in beats.items()
    }
  accuracy, seconds = drawn
  std = np.array([r.accuracy_std for r in rows])
  picks = np.bincount(
    analysis.choose(accuracy, seconds, std, race.rule, race.tolerance, race.per_doubling), minlength=len(rows)
  )
  front = confidence.on_front(accuracy, seconds, race.speed_margin).mean(axis=0)
  names = [r.name for r in rows]
  spot = dict(zip(names, (picks / len(accuracy)).tolist(), strict=True))
  spare, kept = _spare(race, rows, [n != pick and spot[n] < race.stop_below for n in names], accuracy, seconds)
  behind = {name: 0.0 for name in beats}
  spare = tuple(m for name in spare for m in members.get(name, (name,)))  # a stopped architecture, all its settings
  return Chances(
    spot | behind | chance,
    dict(zip(names, front.tolist(), strict=True)) | behind | chance,
    pick,
    means,
    tuple(chance) + spare,
    kept,
    beats,
  )


def _spare(race, rows, candidates, accuracy, seconds) -> tuple[tuple[str, ...], dict[str, float]]:
  """The candidates the front can do without: taken in order of their mean share of the hypervolume,
  least first, each kept out while the front without it and the ones before keeps at least 1 - front_loss
  of its hypervolume in at least 1 - stop_below of the draws."""
  log2 = np.log2(seconds)
  reference = volume.reference_point([math.log2(r.seconds_mean) for r in rows], [r.accuracy_mean for r in rows])
  alone = {i: float(volume.kept_share(log2, accuracy, reference, [i]).mean()) for i, c in enumerate(candidates) if c}
  out, kept = [], {}
  for i in sorted(alone, key=lambda i: -alone[i]):
    share = float((volume.kept_share(log2, accuracy, reference, [*out, i]) >= 1 - race.front_loss).mean())
    if share > 1 - race.stop_below:
      out.append(i)
      kept[rows[i].name] = share
  return tuple(rows[i].name for i in out), kept
