"""A trained network, found and loaded: for predictions, export and pictures.

:func:`find` turns a ``--workdir`` into the run directory that holds the network: a run's own
directory, or in a sweep directory the trial that answers it: the sweet spot of its ``answer.json``
(the pick on the means when undecided, and said so), its lowest completed seed; ``trial`` names another
(a trial, ``features=32-32,kernel_size=3,seed=1``, or a configuration, its lowest completed seed).
:func:`load` reads that run's config and its last checkpoint's parameters::

    from convnet import trained
    network = trained.load(trained.find("runs/sweep").workdir)
    network.model, network.params, network.class_names, network.image_shape
"""

from collections.abc import Mapping
import dataclasses
from pathlib import Path
from typing import Any

import jax

from convnet import configuration, input_pipeline, models, steps
from convnet.errors import DataError
from convnet.rundir import checkpoints, files, runlog
from convnet.sweep import store


@dataclasses.dataclass(frozen=True)
class Found:
  """The run directory that :func:`find` chose, and why, in words ('' for a run given directly)."""

  workdir: Path
  why: str = ""


@dataclasses.dataclass(frozen=True)
class Network:
  """A trained run's network: its config, model, parameters (last checkpoint) and what its inputs are."""

  workdir: Path
  config: dict[str, Any]
  model: models.ConvNet
  params: Any
  epoch: int
  class_names: tuple[str, ...]
  image_shape: tuple[int, int, int]
  data: input_pipeline.Dataset
  summary: Mapping[str, Any] | None


def is_sweep(workdir: Path) -> bool:
  return (workdir / store.RESULTS_FILE).is_file() or (workdir / store.TRIALS_DIR).is_dir()


def _completed(workdir: Path) -> dict[str, list[tuple[int, str]]]:
  """Each configuration's completed trials as (seed, trial name), lowest seed first."""
  found: dict[str, list[tuple[int, str]]] = {}
  for record in store.read_results(workdir):
    if record.get("status") == "completed":
      record = store.with_configuration(record)
      found.setdefault(record["configuration"], []).append((int(record.get("seed", 0)), record["name"]))
  return {name: sorted(seeds) for name, seeds in found.items()}


def find(workdir: str | Path, trial: str | None = None) -> Found:
  """The run directory of ``workdir`` (a run, or a sweep: see the module); DataError saying what to give."""
  workdir = Path(workdir)
  if not workdir.is_dir():
    raise DataError(f"{workdir}: workdir not found; train a run there first (python -m convnet.main ...)")
  if not is_sweep(workdir):
    if trial:
      raise DataError(f"--trial={trial}: {workdir} is a single run, not a sweep directory; leave --trial out")
    return Found(workdir)
  if trial and (workdir / store.TRIALS_DIR / trial / runlog.CONFIG_FILE).is_file():
    return Found(workdir / store.TRIALS_DIR / trial, f"trial {trial} of the sweep {workdir}")
  completed = _completed(workdir)
  if trial:
    if trial not in completed:
      shown = ", ".join(list(completed)[:8]) or "none completed yet"
      raise DataError(f"--trial={trial}: no such trial or configuration with a completed trial in {workdir} ({shown})")
    seed, name = completed[trial][0]
    return Found(workdir / store.TRIALS_DIR / name, f"configuration {trial} of the sweep {workdir}: seed {seed}")
  answer = files.read_json(workdir / store.ANSWER_FILE)
  if answer is None or not answer.get("sweet_spot"):
    raise DataError(
      f"{workdir / store.ANSWER_FILE}: no answer yet; finish the sweep (or python -m convnet.report --workdir={workdir}), "
      "or name one with --trial=NAME"
    )
  spot = answer["sweet_spot"]
  if spot not in completed:
    raise DataError(f"{workdir}: its sweet spot {spot} has no completed trial; name one with --trial=NAME")
  seed, name = completed[spot][0]
  status = "" if answer.get("status") in (None, "decided") else f", {answer['status']}: {answer.get('text', '')}"
  return Found(workdir / store.TRIALS_DIR / name, f"the sweet spot of the sweep {workdir}: {spot}{status}; seed {seed}")


def load(workdir: str | Path) -> Network:
  """The network of the run in ``workdir`` (its config.json and last checkpoint that restores)."""
  workdir = Path(workdir)
  config = files.read_json(workdir / runlog.CONFIG_FILE)
  if config is None:
    raise DataError(f"{workdir / runlog.CONFIG_FILE}: not found; {workdir} is not a convnet run")
  config = {k: v for k, v in config.items() if k != runlog.CODE_KEY}
  data = input_pipeline.get_datasets(config["dataset"])
  kwargs = configuration.model_kwargs(config, data.num_classes)
  target = steps.create_train_state(jax.random.PRNGKey(0), config, data.image_shape, data.num_classes)
  state, epoch = checkpoints.restore(workdir, target)
  return Network(workdir, config, models.ConvNet(**kwargs), state.params, epoch, data.class_names,
                 data.image_shape, data, files.read_json(workdir / runlog.SUMMARY_FILE))  # fmt: skip
