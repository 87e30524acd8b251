"""Sweep results -> table, Pareto front, sweet spot, plots.

``python -m convnet.report --workdir=runs/sweep`` re-makes the report from results.jsonl (``convnet.report``).

Writes ``results.csv`` (one row per trial), ``report.md`` (one row per configuration, mean ± std
over seeds; the Pareto front, the sweet spot and how sure it is), ``answer.json`` (the answer for
scripts: ``convnet.results.confidence.Answer``), ``pareto.png`` (validation accuracy against seconds
per epoch) and ``learning_curves.png`` (validation accuracy per epoch); a plot that could show nothing
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

import ml_collections

from convnet import input_pipeline
from convnet.errors import ConfigError, DataError
from convnet.results import analysis, confidence, hparams, markdown, plots, spending, tuning
from convnet.rundir import files
from convnet.sweep import settings, trials
from convnet.sweep import store as sweep_store

log = logging.getLogger("convnet")
REPORT_FILE = "report.md"
ANSWER_FILE = sweep_store.ANSWER_FILE
CSV_FILE = "results.csv"
PLOT_FILES = ("pareto.png", "learning_curves.png")
CSV_FIELDS = (
    "name", "status", "seed", "validation_accuracy", "test_accuracy", "train_accuracy", "validation_loss",
    "test_loss", "train_loss", "epoch",
    "epoch_seconds", "examples_per_second", "compile_seconds", "latency_ms", "latency_p90_ms", "throughput",
    "num_params", "param_bytes", "flops_per_example", "flatten_size",
    "backend", "device", "machine", "code", "pruned_at", "pruned_by", "error",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Report:
  """What :func:`write_report` wrote: report.md's text, the trials, the configurations, the sweet spot, the files."""

  text: str
  results: list[dict[str, Any]]
  rows: list[analysis.ConfigResult]
  sweet_spot: analysis.ConfigResult | None  # the rule's pick on the means (see answer for how sure)
  files: list[Path]
  answer: confidence.Answer | None = None

  def pareto_figure(self):
    """Validation accuracy against seconds per epoch, the Pareto front and the sweet spot (a matplotlib Figure)."""
    return _pareto_figure(self.rows, self.sweet_spot, self.results, self.answer)


def read(workdir: str | Path) -> Report:
  """A sweep directory's report, computed from its files and writing nothing (for notebooks)::

  sweep = report.read("experiments/fashion_mnist_sweet_spot/default_grid")
  sweep.sweet_spot.name, sweep.pareto_figure()
  """
  store = sweep_store.open_existing(workdir)
  config = store.config()
  if config is None:
    raise DataError(f"{store.workdir / sweep_store.CONFIG_FILE}: not found; {store.workdir} is not a sweep directory")
  results, outside = in_grid(config, store.results())
  rows = tuning.decided_rows(results, config)
  text = markdown.markdown(config, results, _pixels(config), store.fixed_costs(results), outside)
  return Report(text, list(results), rows, analysis.chosen_sweet_spot(rows, config)[0], [], answer_of(rows, config))


def _pixels(config: Mapping[str, Any]) -> int | None:
  """The input's pixel count (None where the data is gone: the report stands without it)."""
  try:
    return math.prod(input_pipeline.peek_shape(config["dataset"])[0]) if config.get("dataset") else None
  except (DataError, ConfigError):
    return None


def in_grid(config: Mapping[str, Any], results: Sequence[Mapping[str, Any]]) -> tuple[list[dict], list[dict]]:
  """(the results of the trials in ``config``'s grid, those recorded in the directory outside it): a sweep
  directory can hold trials of an earlier, larger grid; the answer is of the config's grid only."""
  try:
    names = {t.name for t in trials.expand(ml_collections.ConfigDict(settings.upgrade(config)))}
  except (ConfigError, KeyError, TypeError, ValueError, AttributeError):
    return [dict(r) for r in results], []  # a config that no longer expands (older code): every recorded trial
  return [dict(r) for r in results if r["name"] in names], [dict(r) for r in results if r["name"] not in names]


def answer_of(rows: Sequence[analysis.ConfigResult], config: Mapping[str, Any]) -> confidence.Answer:
  """The sweep's answer by its config's ``sweep.report`` settings, with how sure it is."""
  return confidence.answer(rows, *confidence.settings_of(config))


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


def _pareto_figure(rows: Sequence[analysis.ConfigResult], spot, results: Sequence[Mapping[str, Any]], answer=None):
  """pareto.png's figure: the configurations, their front, the sweet spot and the pruned ones greyed."""
  return plots.pareto(rows, analysis.pareto_front(rows), spot, markdown.machine(results), spending.pruned(results),
                      answer.on_front if answer else None, answer.per_doubling if answer else None,
                      answer.status if answer else "decided")  # fmt: skip


def write_report(
  workdir: str | Path, config: Mapping[str, Any] | None = None, results: Sequence[Mapping[str, Any]] | None = None
) -> Report:
  """Writes results.csv, report.md, the HParams events and the plots that can show something into ``workdir``."""
  store = sweep_store.SweepStore(workdir) if config is not None else sweep_store.open_existing(workdir)
  config = config if config is not None else store.config() or {}
  results = [sweep_store.with_configuration(r) for r in (store.results() if results is None else results)]
  results, outside = in_grid(config, results) if config.get("sweep") else (results, [])
  pixels = _pixels(config)
  write_csv(store.workdir / CSV_FILE, results)
  if config.get("tensorboard", True):
    hparams.write(store.workdir, results)  # TensorBoard's HParams dashboard: a session per trial
  text = markdown.markdown(config, results, pixels, store.fixed_costs(results), outside)
  files.atomic_write_text(store.workdir / REPORT_FILE, text)
  rows = tuning.decided_rows(results, config)
  spot = analysis.chosen_sweet_spot(rows, config)[0]
  answer = answer_of(rows, config)
  files.write_json(store.workdir / ANSWER_FILE, answer.to_json())
  curves = store.learning_curves(results)
  split = analysis.split_name(analysis.accuracy_key(results))
  figures = {
    "pareto.png": (len(rows) > 1) and (lambda: _pareto_figure(rows, spot, results, answer)),
    "learning_curves.png": any(len(c) > 1 for c in curves.values()) and (lambda: plots.learning_curves(curves, split)),
  }
  written = [store.workdir / REPORT_FILE, store.workdir / ANSWER_FILE, store.workdir / CSV_FILE]
  for name, make in figures.items():
    if make:
      plots.save(make(), store.workdir / name)
      written.append(store.workdir / name)
    else:  # nothing to show (one configuration, one epoch): no plot, and no stale one from an earlier report
      (store.workdir / name).unlink(missing_ok=True)
  return Report(text, list(results), rows, spot, written, answer)
