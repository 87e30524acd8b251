"""Sweep results -> table, Pareto front, sweet spot, plots.

``python -m convnet.report --workdir=runs/sweep`` re-makes the report from results.jsonl (``convnet.report``).

Writes ``results.csv`` (one row per trial), ``report.md`` (one row per configuration, mean ± std
over seeds; the Pareto front and the sweet spot), ``pareto.png`` (test accuracy against seconds
per epoch) and ``learning_curves.png`` (test accuracy per epoch); a plot that could show nothing
(one configuration, one epoch) is left out; and TensorBoard's HParams events (``convnet.results.hparams``).
The numbers come from ``convnet.results.analysis`` and the text from ``convnet.results.markdown`` (pure
functions on the records); this module reads the records (``convnet.sweep.store``) and writes the files.
"""

from collections.abc import Mapping, Sequence
import csv
import dataclasses
import io
import json
import logging
import math
from pathlib import Path
from typing import Any

from convnet import input_pipeline
from convnet.errors import ConfigError, DataError
from convnet.results import analysis, hparams, markdown, plots
from convnet.rundir import files
from convnet.sweep import store as sweep_store

log = logging.getLogger("convnet")
REPORT_FILE = "report.md"
CSV_FILE = "results.csv"
PLOT_FILES = ("pareto.png", "learning_curves.png")
CSV_FIELDS = (
    "name", "status", "seed", "validation_accuracy", "test_accuracy", "train_accuracy", "validation_loss",
    "test_loss", "train_loss", "epoch",
    "epoch_seconds", "examples_per_second", "compile_seconds", "num_params", "flops_per_example", "flatten_size",
    "backend", "device", "machine", "code", "pruned_at", "pruned_by", "error",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Report:
  """What :func:`write_report` wrote: report.md's text, the trials, the configurations, the sweet spot, the files."""

  text: str
  results: list[dict[str, Any]]
  rows: list[analysis.ConfigResult]
  sweet_spot: analysis.ConfigResult | None
  files: list[Path]

  def pareto_figure(self):
    """Test accuracy against seconds per epoch, the Pareto front and the sweet spot (a matplotlib Figure)."""
    return _pareto_figure(self.rows, self.sweet_spot, self.results)


def read(workdir: str | Path) -> Report:
  """A sweep directory's report, computed from its files and writing nothing (for notebooks)::

  sweep = report.read("experiments/fashion_mnist_sweet_spot/default_grid")
  sweep.sweet_spot.name, sweep.pareto_figure()
  """
  store = sweep_store.open_existing(workdir)
  config = store.config()
  if config is None:
    raise DataError(f"{store.workdir / sweep_store.CONFIG_FILE}: not found; {store.workdir} is not a sweep directory")
  results = store.results()
  rows = analysis.aggregate(results)
  text = markdown.markdown(config, results, fixed=store.fixed_costs(results))
  return Report(text, list(results), rows, analysis.chosen_sweet_spot(rows, config)[0], [])


def write_csv(path: Path, results: Sequence[Mapping[str, Any]]) -> None:
  override_keys = sorted({k for r in results for k in r.get("overrides", {}) if k not in CSV_FIELDS})

  def cell(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (list, tuple)) else value

  out = io.StringIO()
  writer = csv.writer(out)
  writer.writerow([*CSV_FIELDS[:2], *override_keys, *CSV_FIELDS[2:]])
  for r in results:
    fields = {**r, "code": (r.get("code") or {}).get("source", "")}
    overrides = [cell(r.get("overrides", {}).get(k)) for k in override_keys]
    writer.writerow([r.get("name"), r.get("status"), *overrides, *(fields.get(k, "") for k in CSV_FIELDS[2:])])
  files.atomic_write_text(path, out.getvalue())


def _pareto_figure(rows: Sequence[analysis.ConfigResult], spot, results: Sequence[Mapping[str, Any]]):
  """pareto.png's figure: the configurations, their front, the sweet spot and the pruned ones greyed."""
  return plots.pareto(rows, analysis.pareto_front(rows), spot, markdown.machine(results), analysis.pruned(results))


def write_report(
  workdir: str | Path, config: Mapping[str, Any] | None = None, results: Sequence[Mapping[str, Any]] | None = None
) -> Report:
  """Writes results.csv, report.md, the HParams events and the plots that can show something into ``workdir``."""
  store = sweep_store.SweepStore(workdir) if config is not None else sweep_store.open_existing(workdir)
  config = config if config is not None else store.config() or {}
  results = [sweep_store.with_configuration(r) for r in (store.results() if results is None else results)]
  pixels = None
  if config.get("dataset"):
    try:
      pixels = math.prod(input_pipeline.peek_shape(config["dataset"])[0])
    except (DataError, ConfigError):
      pass  # the data is gone; the report still stands without the pixel count
  write_csv(store.workdir / CSV_FILE, results)
  if config.get("tensorboard", True):
    hparams.write(store.workdir, results)  # TensorBoard's HParams dashboard: a session per trial
  text = markdown.markdown(config, results, pixels, store.fixed_costs(results))
  files.atomic_write_text(store.workdir / REPORT_FILE, text)
  rows = analysis.aggregate(results)
  spot = analysis.chosen_sweet_spot(rows, config)[0]
  curves = store.learning_curves(results)
  figures = {
    "pareto.png": (len(rows) > 1) and (lambda: _pareto_figure(rows, spot, results)),
    "learning_curves.png": any(len(c) > 1 for c in curves.values()) and (lambda: plots.learning_curves(curves)),
  }
  written = [store.workdir / REPORT_FILE, store.workdir / CSV_FILE]
  for name, make in figures.items():
    if make:
      plots.save(make(), store.workdir / name)
      written.append(store.workdir / name)
    else:  # nothing to show (one configuration, one epoch): no plot, and no stale one from an earlier report
      (store.workdir / name).unlink(missing_ok=True)
  return Report(text, list(results), rows, spot, written)
