"""Configs: loading config files, checking a run's values, and the same-run rule.

A config file is a Python file whose ``get_config(variant)`` returns an ``ml_collections.ConfigDict``
(``configs/default.py``, ``configs/sweep.py``), loaded by path as ``--config=PATH[:VARIANT]`` does. A
relative path that does not exist from the current directory is looked up among the configs that
ship with convnet (the repository's top-level ``configs/``, installed as ``convnet/configs/``), so
``configs/default.py`` works from any directory.

The same-run rule: a workdir holds one run. Re-running it with a config that would change the
result is refused (one line naming the field); the fields in :data:`RESUMABLE_CHANGES` may change.
"""

from collections.abc import Collection, Mapping
import importlib.util
import math
import os
from pathlib import Path
from typing import Any

import ml_collections

from convnet import inference, models, numerics
from convnet.errors import ConfigError
from convnet.rundir import files, runlog

OPTIMIZERS = ("adam", "sgd")
# Config fields that may change between a run and its resumption (they do not change the result).
RESUMABLE_CHANGES = frozenset(
  {"num_epochs", "stop_at", "steps_per_call", "eval_batch_size", "checkpoint", "tensorboard", "progress",
   "backend", "num_devices", "distributed", "matmul_precision", "deterministic", "inference"}
)  # fmt: skip
# Where the configs that ship with convnet are: installed (convnet/configs/, in a checkout a symlink to the
# top-level configs/) or the top-level configs/ of a checkout whose file system keeps no symlinks.
_PACKAGE = Path(__file__).resolve().parent
CONFIG_DIRS = (_PACKAGE / "configs", _PACKAGE.parents[1] / "configs")


def shipped_configs() -> dict[str, Path]:
  """The config files that come with convnet, by file name."""
  found: dict[str, Path] = {}
  for directory in CONFIG_DIRS:
    for path in sorted(directory.glob("*.py")) if directory.is_dir() else ():
      if not path.name.startswith("_"):
        found.setdefault(path.name, path)
  return found


def resolve_path(path: str | os.PathLike) -> Path:
  """The config file ``path`` names: as given if it exists, else the shipped config of that name."""
  given = Path(path)
  if given.is_file():
    return given
  shipped = shipped_configs()
  if not given.is_absolute() and given.parent.name in ("configs", "") and given.name in shipped:
    return shipped[given.name]
  raise ConfigError(
    f"{path}: config file not found (from {Path.cwd()}); give a path to a config file, or one of the "
    f"shipped configs: {', '.join('configs/' + name for name in shipped) or 'none found'}"
  )


def load_config(spec: str | os.PathLike) -> ml_collections.ConfigDict:
  """Loads ``PATH[:VARIANT]`` as ``--config=PATH[:VARIANT]`` does: ``get_config(VARIANT)``."""
  path, _, variant = str(spec).partition(":")
  path = resolve_path(path)
  module_spec = importlib.util.spec_from_file_location(f"_convnet_config_{path.stem}", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(variant) if variant else module.get_config()


def to_dict(config: ml_collections.ConfigDict | Mapping[str, Any]) -> dict[str, Any]:
  """A plain-dict copy of a ConfigDict or mapping."""
  return config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)


def check_config(config: Mapping[str, Any]) -> None:
  """Raises ConfigError for a training value that is not allowed (the model is checked with the data)."""

  def need_int(name: str, minimum: int) -> None:
    value = config[name]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
      raise ConfigError(f"{name}={value!r} is not allowed; use an int >= {minimum}")

  need_int("num_epochs", 1)
  need_int("batch_size", 1)
  need_int("eval_batch_size", 1)
  need_int("steps_per_call", 0)
  need_int("seed", 0)
  if config["optimizer"] not in OPTIMIZERS:
    raise ConfigError(f"optimizer={config['optimizer']!r} is not allowed; use one of {OPTIMIZERS}")
  lr = config["learning_rate"]
  if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
    raise ConfigError(f"learning_rate={lr!r} is not allowed; use a finite number > 0")
  precision = config.get("matmul_precision", "float32")
  if precision not in numerics.MATMUL_PRECISIONS:
    raise ConfigError(f"matmul_precision={precision!r} is not allowed; use one of {numerics.MATMUL_PRECISIONS}")
  if not isinstance(config.get("deterministic", False), bool):
    raise ConfigError(f"deterministic={config['deterministic']!r} is not allowed; use True or False")
  inference.check_settings(config)
  stop_at = config.get("stop_at")
  if stop_at is not None and not 0 < stop_at <= 1:
    raise ConfigError(f"stop_at={stop_at!r} is not allowed; use a train accuracy in (0, 1] or None")
  models.normalized(config["model"])


def model_kwargs(config: Mapping[str, Any], num_classes: int) -> dict[str, Any]:
  """``config.model`` with the dataset's number of classes (where it is None): ConvNet(**model_kwargs(...)).
  Lists (a config read back from JSON) become tuples, so that the module hashes (one compilation per architecture)."""
  kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in dict(config["model"]).items()}
  if kwargs.get("num_classes") is None:
    kwargs["num_classes"] = num_classes
  elif kwargs["num_classes"] != num_classes:
    raise ConfigError(f"model.num_classes={kwargs['num_classes']} but the dataset has {num_classes} classes")
  return kwargs


def _comparable(config: Mapping[str, Any]) -> dict[str, Any]:
  """The flattened config as the same-run rule compares it: the model with its defaults filled in
  and its values normalised (``padding='same'`` is ``'SAME'``), the code record left out."""
  config = {k: v for k, v in files.json_safe(config).items() if k != runlog.CODE_KEY}
  if isinstance(config.get("model"), Mapping):
    model = {k: v for k, v in config["model"].items() if v is not None}
    try:
      config["model"] = files.json_safe(models.normalized(model))
    except ConfigError:
      pass  # compared as written; the current config's own check reports a bad value
  return files.flatten_dict(config)


def check_same_run(
  previous: Mapping[str, Any] | None,
  current: Mapping[str, Any],
  workdir,
  resumable: Collection[str] = RESUMABLE_CHANGES,
) -> None:
  """Raises ConfigError if ``workdir``'s recorded config differs from ``current`` in a field that is
  not ``resumable`` (a field's path, or a group's: ``model`` covers ``model.features``)."""
  if previous is None:
    return
  kinds = {True: "a sweep", False: "a single run"}
  was, is_now = "sweep" in previous, "sweep" in current  # a sweep config has a `sweep` group (convnet.sweep.settings)
  if was != is_now:
    raise ConfigError(
      f"{workdir} holds {kinds[was]}, not {kinds[is_now]} (its config.json); use another --workdir"
      + (" (a sweep's trials are its trials/<name>/ folders)" if was else "")
    )
  before, now = _comparable(previous), _comparable(current)

  def may_change(key: str) -> bool:
    return any(key == path or key.startswith(path + ".") for path in resumable)

  changed = sorted(k for k in set(before) | set(now) if not may_change(k) and before.get(k) != now.get(k))
  if changed:
    k = changed[0]
    raise ConfigError(
      f"{workdir} holds {'a sweep' if is_now else 'a run'} with a different config ({k}: {before.get(k)!r} there, "
      f"{now.get(k)!r} now); use another --workdir"
    )
