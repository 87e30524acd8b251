"""What a run writes to its workdir, through one writer: :class:`RunLog`.

* ``config.json``: the full config (everything that changes a result) and the code that ran;
* ``metrics.jsonl``: one JSON line per epoch, appended and fsynced;
* ``summary.json``: the final metrics and the facts of the run, replaced atomically;
* ``tensorboard/``: event files for TensorBoard (written with tensorboardX, no TensorFlow);
* a progress bar per epoch on a terminal (quiet otherwise).

The JSON-lines helpers survive a ``kill -9`` at any moment: a line is written with one ``write``
and fsynced, a torn last line (no newline) is ignored when reading and cut off before the next
append, and whole files are replaced with write-to-temp, fsync, rename.
"""

from collections.abc import Callable, Iterable, Iterator, Mapping
import contextlib
import json
import math
import os
from pathlib import Path
import statistics
import tempfile
from typing import Any

from convnet.errors import DataError

CONFIG_FILE = "config.json"
CODE_KEY = "code"  # config.json's record of the code that ran (convnet.provenance), beside the config fields
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
TENSORBOARD_DIR = "tensorboard"


def json_safe(value: Any) -> Any:
  """JSON-safe copy: tuples to lists, NaN/inf to None, numpy/jax scalars to Python numbers."""
  if isinstance(value, Mapping):
    return {str(k): json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [json_safe(v) for v in value]
  if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


@contextlib.contextmanager
def atomic_replace(path: str | os.PathLike) -> Iterator[str]:
  """A temporary file beside ``path`` (the usual mode) for the ``with`` block to write; on success it is
  fsynced and renamed over ``path``, so readers see the old or the new file, never a mix; on failure removed."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes it private (0600); give it the usual mode
    os.close(fd)
    yield tmp
    with open(tmp, "rb") as f:
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    Path(tmp).unlink(missing_ok=True)
    raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
  """Replaces ``path`` with ``text`` so that readers see the old or the new file, never a mix."""
  with atomic_replace(path) as tmp:
    Path(tmp).write_text(text)


def _umask() -> int:
  """The process's umask (read by setting it and setting it back: Python has no getter)."""
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


def flatten_dict(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """{'a': {'b': 1}} -> {'a.b': 1}."""
  out = {}
  for key, value in tree.items():
    if isinstance(value, Mapping):
      out.update(flatten_dict(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def write_json(path: str | os.PathLike, data: Mapping[str, Any]) -> None:
  atomic_write_text(path, json.dumps(json_safe(data), indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike) -> dict[str, Any] | None:
  """The JSON object in ``path``, or None if the file does not exist; DataError if it is not JSON."""
  try:
    value = json.loads(Path(path).read_text())
  except FileNotFoundError:
    return None
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise DataError(f"{path}: corrupt, not JSON ({e}); move it away to start this run afresh") from None
  if not isinstance(value, dict):
    raise DataError(f"{path}: corrupt, holds a {type(value).__name__} instead of a JSON object")
  return value


def read_jsonl(path: str | os.PathLike, on_bad_line: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
  """All complete lines of a JSON-lines file; a torn last line (no newline) is ignored.

  A garbled line elsewhere raises DataError naming the file and the line, or, with ``on_bad_line``,
  is passed over after ``on_bad_line('FILE:LINE: what is wrong')``.
  """
  try:
    text = Path(path).read_text(errors="replace")
  except FileNotFoundError:
    return []
  records = []
  for number, line in enumerate(text.split("\n")[:-1], start=1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
      if not isinstance(record, dict):
        raise ValueError(f"a {type(record).__name__}, not a JSON object")
    except ValueError as e:
      problem = f"{path}:{number}: corrupt line ({str(e).splitlines()[0][:120]})"
      if on_bad_line is None:
        raise DataError(problem + "; remove or repair that line") from None
      on_bad_line(problem)
      continue
    records.append(record)
  return records


def append_jsonl(path: str | os.PathLike, record: Mapping[str, Any]) -> None:
  """Appends one line with a single write and fsync, first cutting off a torn last line."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  line = (json.dumps(json_safe(record), sort_keys=True) + "\n").encode()
  with open(path, "ab+") as f:
    size = f.seek(0, os.SEEK_END)
    if size:
      f.seek(size - 1)
      if f.read(1) != b"\n":  # a torn line from a killed writer: cut it off
        f.seek(0)
        f.truncate(f.read().rfind(b"\n") + 1)
    f.seek(0, os.SEEK_END)
    f.write(line)
    f.flush()
    os.fsync(f.fileno())


def rewrite_jsonl(path: str | os.PathLike, records: Iterable[Mapping[str, Any]]) -> None:
  """Atomically replaces a JSON-lines file with ``records``."""
  atomic_write_text(path, "".join(json.dumps(json_safe(r), sort_keys=True) + "\n" for r in records))


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
      write_json(self.workdir / CONFIG_FILE, {**config, **({CODE_KEY: code} if code is not None else {})})

  def read_config(self) -> dict[str, Any] | None:
    return read_json(self.workdir / CONFIG_FILE)

  def read_metrics(self) -> list[dict[str, Any]]:
    return read_jsonl(self.metrics_path)

  def keep_metrics_through(self, epoch: int) -> list[dict[str, Any]]:
    """Drops lines of epochs after ``epoch`` (written before a crash, not checkpointed); returns the rest."""
    records = self.read_metrics()
    kept = [r for r in records if r.get("epoch", 0) <= epoch]
    torn = self.metrics_path.exists() and not self.metrics_path.read_bytes().endswith(b"\n")
    if self.writes and (len(kept) != len(records) or torn):
      rewrite_jsonl(self.metrics_path, kept)
    return kept

  def write_metrics(self, record: Mapping[str, Any]) -> None:
    """Appends an epoch's line to metrics.jsonl, then its scalars to TensorBoard."""
    if self.writes:
      append_jsonl(self.metrics_path, record)
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
    return read_json(self.workdir / SUMMARY_FILE)

  def write_summary(self, summary: Mapping[str, Any]) -> None:
    if self.writes:
      write_json(self.workdir / SUMMARY_FILE, summary)

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
