"""What a run writes to its workdir (its directory's layout), through one writer: :class:`RunLog`.

* ``config.json``: the full config (everything that changes a result) and the code that ran;
* ``metrics.jsonl``: one JSON line per epoch, appended and fsynced;
* ``summary.json``: the final metrics and the facts of the run, replaced atomically;
* ``tensorboard/``: event files for TensorBoard (written with tensorboardX, no TensorFlow);
* a progress bar per epoch on a terminal (quiet otherwise).

Its files are written through ``convnet.rundir.files`` (they survive a ``kill -9`` at any moment).
"""

from collections.abc import Iterable, Mapping
import math
import os
from pathlib import Path
import statistics
from typing import Any

from convnet.rundir import files

CONFIG_FILE = "config.json"
CODE_KEY = "code"  # config.json's record of the code that ran (convnet.provenance), beside the config fields
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
TENSORBOARD_DIR = "tensorboard"


def is_finished(summary: Mapping[str, Any] | None, config: Mapping[str, Any]) -> bool:
  """Whether a run's summary says it is done for ``config``: completed ``num_epochs``, or stopped early
  at a train accuracy that the config's ``stop_at`` still stops at (else it resumes)."""
  if not summary or summary.get("status") != "completed":
    return False
  stop_at = config.get("stop_at")
  stopped = summary.get("stopped_early") and stop_at is not None and summary.get("train_accuracy", 0) >= stop_at
  return bool(stopped or summary.get("epoch", 0) >= config["num_epochs"])


def history_summary(history: list[Mapping[str, Any]]) -> dict[str, Any]:
  """summary.json's figures from metrics.jsonl's lines: the last epoch's metrics, median epoch timings,
  the training time, and the code each epoch ran (``code_sources``: more than one means the run was
  resumed across a code change, so its epochs ran different programs)."""
  timing = ("epoch", "epoch_seconds", "examples_per_second", "eval_seconds", "code")
  summary = {k: v for k, v in (history[-1] if history else {}).items() if k not in timing}
  if history:
    summary["epoch_seconds"] = statistics.median(r["epoch_seconds"] for r in history)
    summary["examples_per_second"] = statistics.median(r["examples_per_second"] for r in history)
    summary["train_seconds"] = sum(r["epoch_seconds"] for r in history)
    summary["code_sources"] = list(dict.fromkeys(r.get("code", "unrecorded") for r in history))
  return summary


class RunLog:
  """The writer for one run's workdir; see the module docstring for the files."""

  def __init__(
    self, workdir: str | os.PathLike, *, tensorboard: bool = True, progress: bool = True, writes: bool = True
  ):
    """``writes=False``: a reader only (a run's processes other than process 0); its writes do nothing."""
    self.workdir = Path(workdir)
    self.writes = writes
    if writes:
      self.workdir.mkdir(parents=True, exist_ok=True)
    self._tensorboard = tensorboard and writes
    self._progress = progress and writes
    self._writer = None

  @property
  def metrics_path(self) -> Path:
    return self.workdir / METRICS_FILE

  def write_config(self, config: Mapping[str, Any], code: Mapping[str, Any] | None = None) -> None:
    """config.json: the config's fields, and under ``code`` the code that ran (if given)."""
    if self.writes:
      files.write_json(self.workdir / CONFIG_FILE, {**config, **({CODE_KEY: code} if code is not None else {})})

  def read_config(self) -> dict[str, Any] | None:
    return files.read_json(self.workdir / CONFIG_FILE)

  def read_metrics(self) -> list[dict[str, Any]]:
    return files.read_jsonl(self.metrics_path)

  def keep_metrics_through(self, epoch: int) -> list[dict[str, Any]]:
    """Drops lines of epochs after ``epoch`` (written before a crash, not checkpointed); returns the rest."""
    records = self.read_metrics()
    kept = [r for r in records if r.get("epoch", 0) <= epoch]
    torn = self.metrics_path.exists() and not self.metrics_path.read_bytes().endswith(b"\n")
    if self.writes and (len(kept) != len(records) or torn):
      files.rewrite_jsonl(self.metrics_path, kept)
    return kept

  def write_metrics(self, record: Mapping[str, Any]) -> None:
    """Appends an epoch's line to metrics.jsonl, then its scalars to TensorBoard."""
    if self.writes:
      files.append_jsonl(self.metrics_path, record)
      self._add_scalars(record)

  def _add_scalars(self, record: Mapping[str, Any]) -> None:
    if not self._tensorboard:
      return
    if self._writer is None:
      from tensorboardX import SummaryWriter  # imported on first use: it pulls in protobuf

      self._writer = SummaryWriter(str(self.workdir / TENSORBOARD_DIR))
    for key, value in record.items():
      if key != "epoch" and isinstance(value, (int, float)) and math.isfinite(value):
        self._writer.add_scalar(key, value, global_step=record["epoch"])
    self._writer.flush()

  def rewrite_tensorboard(self, history: Iterable[Mapping[str, Any]]) -> None:
    """TensorBoard's events made anew from metrics.jsonl's lines (on resume): every epoch once, none lost.

    A kill between an epoch's metrics line and its events, or an epoch trained again after a kill
    before its checkpoint, would otherwise leave TensorBoard missing an epoch or showing one twice.
    """
    if not self._tensorboard:
      return
    self.close()
    for old in (self.workdir / TENSORBOARD_DIR).glob("events.out.tfevents.*"):
      old.unlink()
    for record in history:
      self._add_scalars(record)

  def read_summary(self) -> dict[str, Any] | None:
    return files.read_json(self.workdir / SUMMARY_FILE)

  def write_summary(self, summary: Mapping[str, Any]) -> None:
    if self.writes:
      files.write_json(self.workdir / SUMMARY_FILE, summary)

  def progress_bar(self, total: int, description: str):
    """A tqdm bar on a terminal or in a Jupyter notebook; a no-op bar elsewhere (a log file) or when
    progress is off. In a notebook it is tqdm's text bar (no widget library needed)."""
    from tqdm import tqdm

    disable = None if self._progress else True  # None: tqdm shows it on a terminal only
    if self._progress and _in_jupyter():
      disable = False
    return tqdm(total=total, desc=description, unit="step", leave=True, disable=disable)

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
      self._writer = None


def _in_jupyter() -> bool:
  """Whether this runs in a Jupyter kernel (whose stderr is not a terminal but shows a bar)."""
  import sys

  shell = sys.modules.get("IPython") and getattr(sys.modules["IPython"], "get_ipython", lambda: None)()
  return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"
