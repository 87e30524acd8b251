"""A sweep config's sweep-level fields: everything under ``config.sweep``; the rest is every trial's config.

A config with a ``sweep`` group is a sweep (``convnet.main`` runs it as one); the group is the only
place that holds what is not a trial's: a field added to it can neither leak into a trial's config nor
into a trial's same-run check, and a trial's config is the sweep config without it (:func:`trial_base`)::

    config.sweep.axes.<axis>        tuples of values; the trials are their product (``seeds`` sets ``seed``)
    config.sweep.zip                groups of axes that move together, e.g. (('features', 'kernel_size'),)
    config.sweep.tuned              axes that are not costs, chosen per architecture, e.g. ('learning_rate',)
    config.sweep.retry_failed       a re-run retries trials that failed on their own too
    config.sweep.seeds_together     the seeds (and learning rates) of a configuration train as one vmapped program
    config.sweep.prune.*            method (None | 'pareto' | 'race'), rungs, margin, one_seed_margin, keep_leaders,
                                    initial_seeds, stop_below, speed_margin, front_loss, front_seeds, budget
    config.sweep.executor.*         name ('local' | 'ray'), ray_address, trial_resources.{cpu,gpu}, max_failures
    config.sweep.report.*           rule, per_doubling, tolerance, confidence, speed: how the sweet spot is chosen

Sweeps recorded before this layout (their ``config.json`` has ``sweep`` as the axes and the other
fields at the top level: ``prune``, ``executor``, ``report``, ...) are read through :func:`upgrade`.
"""

from collections.abc import Mapping
import copy
from typing import Any

import ml_collections

from convnet import configuration, inference
from convnet.errors import ConfigError

GROUP = "sweep"
# The fields of the old, flat layout and where they live now (see upgrade).
_FLAT = {
  "sweep_zip": ("zip",),
  "retry_failed": ("retry_failed",),
  "seeds_together": ("seeds_together",),
  "report": ("report",),
  "prune": ("prune", "method"),
  "prune_rungs": ("prune", "rungs"),
  "prune_margin": ("prune", "margin"),
  "prune_one_seed_margin": ("prune", "one_seed_margin"),
  "prune_keep_leaders": ("prune", "keep_leaders"),
  "executor": ("executor", "name"),
  "ray_address": ("executor", "ray_address"),
  "trial_resources": ("executor", "trial_resources"),
  "max_failures": ("executor", "max_failures"),
}
# What may change between a sweep and its re-run: the sweep group (new axis values extend it) and the run
# fields that change no result. (Unlike a single run, num_epochs and stop_at may not: recorded trials
# would keep their old values.)
RESUMABLE = frozenset({GROUP} | (configuration.RESUMABLE_CHANGES - {"num_epochs", "stop_at"}))


def is_sweep(config: Mapping[str, Any]) -> bool:
  """Whether ``config`` is a sweep's (it has a ``sweep`` group)."""
  return GROUP in config


def trial_base(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The config without its sweep group: what every trial starts from."""
  base = copy.deepcopy(config)
  with base.unlocked():
    del base[GROUP]
  return base


def of(config: ml_collections.ConfigDict | Mapping[str, Any]) -> dict[str, Any]:
  """The sweep group as a plain dict (``config.sweep``)."""
  return configuration.to_dict(config)[GROUP]


def moved_to(old: str) -> str | None:
  """Where a field of the old, flat layout lives now (``prune`` -> ``sweep.prune.method``;
  ``sweep.features`` -> ``sweep.axes.features``), or None for a field that did not move."""
  head, _, rest = old.partition(".")
  if head in _FLAT:
    return ".".join((GROUP, *_FLAT[head], *([rest] if rest else [])))
  if head == GROUP and rest and rest.split(".")[0] not in ("axes", "zip", "tuned", "retry_failed", "seeds_together", "prune",
                                                          "executor", "report"):  # fmt: skip
    return f"{GROUP}.axes.{rest}"
  return None


def upgrade(recorded: Mapping[str, Any]) -> dict[str, Any]:
  """A recorded sweep config in today's layout (a config.json written before the sweep group held
  every sweep-level field is moved into it; one in today's layout is returned as it is)."""
  recorded = dict(recorded)
  group = recorded.get(GROUP)
  old = isinstance(group, Mapping) and group and all(isinstance(v, (list, tuple)) for v in group.values())
  if not old:  # today's layout: the group holds `axes` and groups of settings, not the axes themselves
    return recorded
  new = {"axes": dict(group)}
  for field, path in _FLAT.items():
    if field in recorded:
      value = recorded.pop(field)
      if len(path) == 1:
        new[path[0]] = value
      else:
        new.setdefault(path[0], {})[path[1]] = value
  recorded[GROUP] = new
  return recorded


def check_tuned(sweep: Mapping[str, Any]) -> None:
  """ConfigError unless ``sweep.tuned`` names axes of ``sweep.axes`` (not seeds)."""
  tuned, axes = sweep.get("tuned") or (), [a for a in sweep.get("axes") or {} if a != "seeds"]
  if isinstance(tuned, str) or any(name not in axes for name in tuned):
    raise ConfigError(f"sweep.tuned={tuned!r} is not allowed; give a tuple of axes of sweep.axes ({', '.join(axes)}), "
                      "e.g. --config.sweep.tuned='(\"learning_rate\",)'")  # fmt: skip


def check_speed(sweep: Mapping[str, Any], base: Mapping[str, Any], prune_method: str | None) -> None:
  """ConfigError for a ``sweep.report.speed`` this sweep cannot decide on: one that pruning or racing
  cannot see while training (they decide on seconds per epoch), or inference that is not measured."""
  speed = (sweep.get("report") or {}).get("speed", "train_time")
  if speed != "train_time" and prune_method is not None:
    raise ConfigError(
      f"sweep.report.speed={speed!r} with sweep.prune.method={prune_method!r}: pruning and racing decide "
      "on seconds per epoch while trials train; use sweep.report.speed='train_time', or sweep.prune.method=None"
    )
  if speed in ("latency", "throughput") and not inference.check_settings(base)["seconds"]:
    raise ConfigError(f"sweep.report.speed={speed!r} needs inference measured: inference.seconds > 0 (e.g. 1.0)")
