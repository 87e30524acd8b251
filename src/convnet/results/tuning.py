"""Axes that are not costs (``sweep.tuned``, e.g. the learning rate): chosen per architecture, not traded.

A learning rate does not make a network faster or slower; two learning rates of one network would both
sit on the speed front, a timing noise apart. So each architecture (a configuration without its tuned
axes) is represented by its configuration with the best mean accuracy on the deciding split
(validation), and the front and the sweet spot are built from those.
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from convnet.results import analysis, speeds


def is_axis(path: str, axis: str) -> bool:
  """Whether a config path (``model.features``) is the one a sweep axis (``features``, ``model__features``) sets."""
  return path == axis or path.endswith("." + axis) or path == axis.replace("__", ".")


def tune(
  rows: Sequence[analysis.ConfigResult], tuned: Sequence[str]
) -> tuple[list[analysis.ConfigResult], dict[str, str]]:
  """Axes that are not costs (``sweep.tuned``, e.g. ``('learning_rate',)``): per architecture (a configuration
  without its tuned axes) the configuration with the best mean accuracy on the deciding split; the front
  and the sweet spot are built from those. Returns them, and for every other configuration the one chosen
  over it."""
  if not tuned:
    return list(rows), {}
  keys = {
    r.name: tuple(sorted((k, repr(v)) for k, v in r.overrides.items() if not any(is_axis(k, a) for a in tuned)))
    for r in rows
  }  # each configuration's architecture: the configuration without its tuned axes
  return best_per(rows, lambda r: keys[r.name])


def best_per(
  rows: Sequence[analysis.ConfigResult], key: Callable[[analysis.ConfigResult], Any]
) -> tuple[list[analysis.ConfigResult], dict[str, str]]:
  """Per ``key`` (an architecture), the row with the best mean accuracy (the first of equals), in the rows'
  order; and every other row's name -> the name of the one chosen over it."""
  best: dict[Any, analysis.ConfigResult] = {}
  for r in rows:
    if key(r) not in best or r.accuracy_mean > best[key(r)].accuracy_mean:
      best[key(r)] = r
  chosen = {id(r) for r in best.values()}
  return [r for r in rows if id(r) in chosen], {r.name: best[key(r)].name for r in rows if id(r) not in chosen}


def decided_rows(results: Sequence[Mapping[str, Any]], config: Mapping[str, Any]) -> list[analysis.ConfigResult]:
  """The configurations the answer chooses among: :func:`aggregate`'s, each architecture's best of its tuned axes."""
  rows = analysis.aggregate(results, speed=speeds.speed_of(config))
  return tune(rows, ((config.get("sweep") or {}).get("tuned")) or ())[0]
