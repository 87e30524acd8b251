"""The one owner of a sweep directory's layout, and its reading::

    DIR/config.json          the sweep's config and the code that started it
    DIR/results.jsonl        the results journal: one line per trial attempt, appended by the driver only
    DIR/trials/<name>/       each trial's run directory (convnet.rundir: config, metrics, summary, checkpoints)
    DIR/.lock                the sweep's lock (convnet.rundir.locks)

The journal survives a ``kill -9`` at any moment (one fsynced write per line, a torn last line cut
off: ``convnet.rundir.files``); a later line for a trial wins, so the journal keeps every attempt. A
corrupt line is reported and skipped: its trial counts as not recorded, and a re-run runs it again.
Every result line names its trial (``name``) and its configuration (``configuration``, the trial
without its seed); lines written before the configuration was recorded get it from their overrides.
"""

from collections.abc import Mapping, Sequence
import logging
from pathlib import Path
import statistics
from typing import Any

from convnet import configuration
from convnet.errors import DataError
from convnet.results import analysis
from convnet.rundir import files, provenance, runlog
from convnet.sweep import settings, trials

log = logging.getLogger("convnet")
RESULTS_FILE = "results.jsonl"
TRIALS_DIR = "trials"
ANSWER_FILE = "answer.json"  # the report's answer for scripts and notebooks (confidence.Answer.to_json)
CONFIG_FILE = runlog.CONFIG_FILE


class SweepStore:
  """A sweep directory: its config, its results journal and its trials' runs."""

  def __init__(self, workdir: str | Path):
    self.workdir = Path(workdir)

  def trial_dir(self, name: str) -> Path:
    return self.workdir / TRIALS_DIR / name

  @property
  def results_path(self) -> Path:
    return self.workdir / RESULTS_FILE

  # --- the sweep's config
  def config(self) -> dict[str, Any] | None:
    """The recorded sweep config (in today's layout: ``settings.upgrade``), or None."""
    recorded = files.read_json(self.workdir / CONFIG_FILE)
    return settings.upgrade(recorded) if recorded is not None else None

  def write_config(self, config: Mapping[str, Any]) -> None:
    files.write_json(self.workdir / CONFIG_FILE, {**config, runlog.CODE_KEY: provenance.code_record()})

  def check_same_sweep(self, config: Mapping[str, Any]) -> None:
    """ConfigError if the directory holds a sweep whose trials would differ from ``config``'s in more
    than their axes: new axis values extend a sweep, and the fields that do not change a result may change."""
    previous = self.config()
    if previous is not None:
      ignored = settings.RESUMABLE | trials.swept_paths(previous) | trials.swept_paths(config)
      configuration.check_same_run(previous, config, self.workdir, resumable=ignored)

  # --- the results journal
  def results(self) -> list[dict[str, Any]]:
    """The recorded trials, one per name (a later line for a name wins), in file order; each with its
    ``configuration``. A corrupt line is reported (a warning naming the file and line) and skipped."""

    def skip(problem: str) -> None:
      log.warning("%s; that trial counts as not recorded (a re-run of the sweep runs it again)", problem)

    records = files.read_jsonl(self.results_path, on_bad_line=skip)
    latest = {r["name"]: r for r in records if isinstance(r.get("name"), str)}
    return [with_configuration(r) for r in latest.values()]

  def append_result(self, record: Mapping[str, Any]) -> None:
    """One line in the journal (only the sweep's driver calls this: one writer)."""
    files.append_jsonl(self.results_path, record)

  # --- the trials' runs
  def epochs(self, name: str) -> list[dict[str, Any]]:
    """A trial's metrics.jsonl lines (one per epoch trained)."""
    return files.read_jsonl(self.trial_dir(name) / runlog.METRICS_FILE)

  def summary(self, name: str) -> dict[str, Any] | None:
    return files.read_json(self.trial_dir(name) / runlog.SUMMARY_FILE)

  def at_rung(self, name: str, rung: int) -> dict[str, Any] | None:
    """A trial's figures after epoch ``rung``: that epoch's metrics, and the median s/epoch through it."""
    history = [m for m in self.epochs(name) if m["epoch"] <= rung]
    if not history or history[-1]["epoch"] != rung:
      return None
    return {**history[-1], "epoch_seconds": statistics.median(m["epoch_seconds"] for m in history)}

  def fixed_costs(self, results: Sequence[Mapping[str, Any]]) -> list[float]:
    """Seconds each trial spent outside its epochs (data, model, compilation, evaluation, checkpoints):
    ``total_seconds - train_seconds`` from its summary.json, for the trials trained in one go (a resumed
    one's ``train_seconds`` counts epochs of its earlier entries)."""
    out = []
    for r in results:
      summary = self.summary(r["name"]) if r.get("epoch") else None
      if summary and not summary.get("resumed_from") and {"total_seconds", "train_seconds"} <= set(summary):
        out.append(summary["total_seconds"] - summary["train_seconds"])
    return out

  def learning_curves(self, results: Sequence[Mapping[str, Any]]) -> dict[str, dict[int, list[float]]]:
    """Validation accuracy (test in sweeps recorded before it) per epoch of each configuration's trained
    trials (a pruned one's ends where it stopped)."""
    curves: dict[str, dict[int, list[float]]] = {}
    for r in results:
      if r.get("status") in ("completed", "pruned"):
        for m in self.epochs(r["name"]):
          if m["epoch"] <= r.get("epoch", m["epoch"]):
            curves.setdefault(r["configuration"], {}).setdefault(m["epoch"], []).append(deciding(m))
    return curves


def deciding(record: Mapping[str, Any]) -> float:
  """A metrics line's accuracy that decisions read: validation; test in sweeps recorded before it."""
  return record[analysis.DECIDES] if analysis.DECIDES in record else record[analysis.REPORTS]


def with_configuration(record: Mapping[str, Any]) -> dict[str, Any]:
  """A result line with its ``configuration`` (recorded, or from its overrides for an older line)."""
  if "configuration" in record:
    return dict(record)
  return {**record, "configuration": trials.configuration_name(record.get("overrides") or {})}


def open_existing(workdir: str | Path) -> SweepStore:
  """The sweep directory ``workdir``; DataError naming it if it is not one (no results.jsonl)."""
  store = SweepStore(workdir)
  if not store.workdir.is_dir():
    raise DataError(f"{store.workdir}: no such directory; run a sweep into it first")
  if not store.results_path.is_file():
    raise DataError(f"{store.results_path}: not found; {store.workdir} is not a sweep directory (run a sweep there)")
  return store


def read_results(workdir: str | Path) -> list[dict[str, Any]]:
  """The recorded trials of the sweep directory ``workdir`` (see :meth:`SweepStore.results`)."""
  return open_existing(workdir).results()
