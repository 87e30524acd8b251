"""The hypervolume of a Pareto front in (log2 cost, accuracy): how much of the trade-off it covers.

The front's hypervolume is the area it dominates up to a reference point: lower log2 seconds per epoch
(or cost) and higher accuracy are better. The reference point (:func:`reference_point`) is the worst of
each objective over the configurations (the slowest cost, the lowest accuracy) moved out by
:data:`PAD` of that objective's range, so that the front's two ends, the fastest and the most
accurate configuration, both add an area. Racing (``convnet.sweep.racing``) stops a configuration only
while the front keeps almost all of its hypervolume without it; the replayed evaluation
(``convnet.sweep.evaluation``) compares a strategy's front with the reference grid's by it.
"""

from collections.abc import Sequence

import numpy as np

PAD = 0.1  # the reference point lies this share of each objective's range beyond its worst value


def reference_point(log2_costs: Sequence[float], accuracies: Sequence[float]) -> tuple[float, float]:
  """(log2 cost, accuracy): the worst of each, moved out by :data:`PAD` of its range (see the module)."""
  slowest, fastest = max(log2_costs), min(log2_costs)
  worst, best = min(accuracies), max(accuracies)
  return slowest + PAD * (slowest - fastest), worst - PAD * (best - worst)


def hypervolume(points: Sequence[tuple[float, float]], reference: tuple[float, float]) -> float:
  """The area dominated by ``points`` (log2 cost: lower is better; accuracy: higher) up to ``reference``."""
  if not points:
    return 0.0
  log2_costs, accuracies = (np.array([p[i] for p in points], float)[None] for i in (0, 1))
  return float(volumes(log2_costs, accuracies, reference)[0])


def volumes(log2_costs: np.ndarray, accuracies: np.ndarray, reference: tuple[float, float]) -> np.ndarray:
  """draws x points -> draws: each draw's hypervolume (see :func:`hypervolume`); a point whose accuracy
  is -inf is left out."""
  ref_cost, ref_accuracy = reference
  order = np.argsort(log2_costs, axis=1, kind="stable")
  cost = np.take_along_axis(log2_costs, order, axis=1)
  best = np.maximum.accumulate(np.maximum(np.take_along_axis(accuracies, order, axis=1), ref_accuracy), axis=1)
  gain = np.diff(best, axis=1, prepend=ref_accuracy)  # each point's strip of accuracy above the faster ones'
  return (np.clip(ref_cost - cost, 0.0, None) * gain).sum(axis=1)


def kept_share(log2_costs: np.ndarray, accuracies: np.ndarray, reference: tuple[float, float], without) -> np.ndarray:
  """draws: the share of each draw's hypervolume that is left without the points ``without`` (indices)."""
  full = volumes(log2_costs, accuracies, reference)
  rest = accuracies.copy()
  rest[:, list(without)] = -np.inf
  return np.divide(volumes(log2_costs, rest, reference), full, out=np.ones_like(full), where=full > 0)
