"""A sweep's axes expanded into trials; each trial's configuration (its identity without the seed) as data.

Each trial is the base config (``settings.trial_base``) with a few overrides and a stable, readable
name derived from them (``features=32-32,kernel_size=5,seed=1``): ``leaf=value`` pairs joined by
commas, seed last, tuples joined by '-'. Its *configuration* is the same without the seed
(``features=32-32,kernel_size=5``; ``base`` when only the seed is swept): the seeds of one
configuration are its repeats. Both are computed from the overrides, never parsed back out of a name.
"""

from collections.abc import Mapping, Sequence
import copy
import dataclasses
import itertools
from typing import Any

import ml_collections

from convnet import models
from convnet.errors import ConfigError
from convnet.results import tuning
from convnet.rundir import files, runlog
from convnet.sweep import settings

SEED = "seed"


@dataclasses.dataclass(frozen=True)
class Trial:
  name: str  # unique in the sweep: its run directory is trials/<name>
  overrides: dict[str, Any]  # dotted config path -> value
  config: ml_collections.ConfigDict

  @property
  def configuration(self) -> str:
    """The trial's configuration: its name without the seed."""
    return configuration_name(self.overrides)

  @property
  def seed(self) -> int:
    return self.config.seed


def _format_value(value: Any) -> str:
  if isinstance(value, (tuple, list)):
    return "-".join(_format_value(v) for v in value)
  return str(value)


def trial_name(overrides: Mapping[str, Any]) -> str:
  """``leaf=value`` pairs joined by commas, seed last; tuples are joined by '-'."""
  keys = sorted((k for k in overrides if k != SEED), key=lambda k: k.rsplit(".", 1)[-1]) + (
    [SEED] if SEED in overrides else []
  )
  return ",".join(f"{k.rsplit('.', 1)[-1]}={_format_value(overrides[k])}" for k in keys)


def program_name(overrides: Mapping[str, Any]) -> str:
  """The compiled program a trial's overrides need: its name without the seed and the learning rate, the
  fields that ``sweep.seeds_together`` trains side by side in one program (``train.TOGETHER``)."""
  return trial_name({k: v for k, v in overrides.items() if k not in (SEED, "learning_rate")}) or "base"


def configuration_name(overrides: Mapping[str, Any]) -> str:
  """The configuration a trial's overrides belong to: its name without the seed (``base`` if nothing else)."""
  return trial_name({k: v for k, v in overrides.items() if k != SEED}) or "base"


def architecture_name(overrides: Mapping[str, Any], tuned: Sequence[str]) -> str:
  """A configuration's architecture: its name without the seed and the axes of ``sweep.tuned``
  (configurations that differ only in those share one; ``convnet.results.tuning``)."""
  return configuration_name({k: v for k, v in overrides.items() if not any(tuning.is_axis(k, a) for a in tuned)})


def resolve_axis(axis: str, base: Mapping[str, Any]) -> str:
  """The config path an axis sets: ``seeds`` -> ``seed``, ``features`` -> ``model.features``."""
  if axis == "seeds":
    return SEED
  wanted = axis.replace("__", ".")
  candidates = [p for p in files.flatten_dict(base) if p == wanted or p.endswith("." + wanted)]
  if len(candidates) != 1:
    problem = "matches no config field" if not candidates else f"is ambiguous ({', '.join(candidates)})"
    raise ConfigError(f"sweep axis {axis!r} {problem}; name it by path with '__', e.g. model__kernel_size")
  return candidates[0]


def swept_paths(config: Mapping[str, Any]) -> set[str]:
  """The config paths a sweep's axes set (their values in the base config do not matter)."""
  base = {k: v for k, v in config.items() if k != settings.GROUP and k != runlog.CODE_KEY}
  return {resolve_axis(name, base) for name in config.get(settings.GROUP, {}).get("axes", {})}


def _axis_example(values: tuple[Any, ...]) -> str:
  """The axis written as the tuple of values it should be: (32, 32) -> '((32,32),)'."""
  compact = repr((tuple(values),)).replace(" ", "")
  return f"'{compact}'"


def _groups(axes: Mapping[str, tuple], zip_groups) -> list[tuple[str, ...]]:
  """The axes in groups that move together: each ``sweep.zip`` group, then every other axis alone."""
  groups: list[tuple[str, ...]] = []
  zipped: set[str] = set()
  for group in zip_groups or ():
    group = tuple(group)
    unknown = [name for name in group if name not in axes or name in zipped]
    if unknown:
      raise ConfigError(f"sweep.zip group {group} names {unknown[0]!r}, which is not a sweep axis or is zipped twice")
    lengths = {name: len(axes[name]) for name in group}
    if len(set(lengths.values())) != 1:
      raise ConfigError(f"sweep.zip group {group} has axes of different lengths {lengths}; zipped axes move together")
    groups.append(group)
    zipped.update(group)
  return groups + [(name,) for name in axes if name not in zipped]


def expand(config: ml_collections.ConfigDict) -> list[Trial]:
  """All trials of ``config.sweep.axes``: the product of the axes, zipped groups moving together."""
  if "axes" not in config.sweep:
    raise ConfigError(
      f"config.sweep has no axes group (it has {', '.join(config.sweep.keys()) or 'nothing'}): sweep axes live in "
      "config.sweep.axes, e.g. config.sweep.axes.features = ((16, 16), (32, 32)), and every other sweep-level "
      "field under config.sweep too (configs/sweep.py shows them all)"
    )
  base = settings.trial_base(config)
  axes = {name: tuple(values) for name, values in config.sweep.axes.items()}
  if not axes:
    raise ConfigError("sweep.axes is empty; give at least one axis, e.g. --config.sweep.axes.seeds='(0,1,2)'")
  for name, values in axes.items():
    if not values:
      raise ConfigError(f"sweep.axes.{name} is empty; give at least one value")
  paths = {name: resolve_axis(name, base.to_dict()) for name in axes}
  choices = [
    [dict(zip(group, values, strict=True)) for values in zip(*(axes[n] for n in group), strict=True)]
    for group in _groups(axes, config.sweep.get("zip"))
  ]
  trials = []
  for combination in itertools.product(*choices):
    overrides = {paths[name]: value for part in combination for name, value in part.items()}
    trial_config = copy.deepcopy(base)
    for name, path in paths.items():
      try:
        trial_config.update_from_flattened_dict({path: overrides[path]})
        if path.startswith("model."):
          models.normalized(trial_config.model.to_dict())
      except (TypeError, ValueError) as e:  # ConfigError is a ValueError
        reason = str(e).splitlines()[0]
        raise ConfigError(
          f"sweep.axes.{name}={axes[name]}: the value {overrides[path]!r} does not fit {path} ({reason}); "
          f"sweep axes are tuples of values, e.g. --config.sweep.axes.{name}={_axis_example(axes[name])}"
        ) from None
    trials.append(Trial(trial_name(overrides), overrides, trial_config))
  names = [t.name for t in trials]
  if len(set(names)) != len(names):
    raise ConfigError(
      f"sweep has duplicate trials (repeated values on an axis: {axes}); sweep axes are tuples of values, "
      f"e.g. --config.sweep.axes.features='((32,32),)' for one configuration"
    )
  return trials
