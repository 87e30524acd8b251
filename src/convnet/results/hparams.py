"""A sweep in TensorBoard's HParams dashboard: one session per trial, made from ``results.jsonl``.

``tensorboard --logdir DIR`` on a sweep directory shows, under HParams, one session per completed
trial with its hyperparameters (every swept axis, and the seed) and its metrics (final validation and test accuracy,
test loss, median seconds per epoch, parameters), so the table view, parallel coordinates and scatter
plot show the accuracy/speed trade-off. Two kinds of files, both written by the sweep's driver (its
report step) and each replaced whole, so a re-run, a resumed sweep or ``python -m convnet.report``
writes the same files again and nothing twice, whichever executor ran the trials:

* ``DIR/events.out.tfevents.hparams``: the experiment, the hyperparameters with the values the sweep
  took (for the dashboard's filters) and the metrics;
* ``DIR/trials/<name>/events.out.tfevents.hparams``: the trial's session: its values, its metrics as
  scalars at the step of its last epoch, and its status. (The trial's own curves are in
  ``trials/<name>/tensorboard/``, written by the trial.)
"""

from collections.abc import Mapping, Sequence
import os
from pathlib import Path
import time
from typing import Any

from convnet.rundir import files
from convnet.sweep import store

EVENTS_FILE = "events.out.tfevents.hparams"
# (metric tag, result field, what it is)
METRICS = (
  ("validation_accuracy", "validation_accuracy", "validation accuracy after the last epoch (decisions read it)"),
  ("test_accuracy", "test_accuracy", "test accuracy after the last epoch (reported only)"),
  ("test_loss", "test_loss", "test loss after the last epoch"),
  ("seconds_per_epoch", "epoch_seconds", "median seconds per epoch (compilation excluded)"),
  ("latency_ms", "latency_ms", "median batch-1 inference latency in ms (compilation excluded)"),
  ("throughput", "throughput", "inference images per second at inference.batch_size"),
  ("num_params", "num_params", "parameters"),
)
PLUGIN = "hparams"


def hparam_values(result: Mapping[str, Any]) -> dict[str, str | float]:
  """A trial's hyperparameters for the dashboard: each swept field by its leaf name, and the seed;
  tuples become '64-64' (as in trial names), numbers stay numbers."""
  values: dict[str, str | float] = {}
  for path, value in sorted((result.get("overrides") or {}).items()):
    name = "seed" if path == "seed" else path.rsplit(".", 1)[-1]
    if isinstance(value, bool) or value is None:
      values[name] = str(value)
    elif isinstance(value, (int, float)):
      values[name] = float(value)
    elif isinstance(value, (list, tuple)):
      values[name] = "-".join(str(v) for v in value)
    else:
      values[name] = str(value)
  values.setdefault("seed", float(result.get("seed", 0)))
  return values


def _summary(tag: str, content) -> Any:
  from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData
  from tensorboardX.proto.summary_pb2 import Summary, SummaryMetadata

  data = HParamsPluginData(version=0, **content)
  metadata = SummaryMetadata(
    plugin_data=SummaryMetadata.PluginData(plugin_name=PLUGIN, content=data.SerializeToString())
  )
  return Summary(value=[Summary.Value(tag=tag, metadata=metadata)])


def experiment_summary(results: Sequence[Mapping[str, Any]]):
  """The experiment: every hyperparameter with the values the sweep's trials took, and the metrics."""
  from google.protobuf import struct_pb2
  from tensorboardX.proto.api_pb2 import DataType, Experiment, HParamInfo, MetricInfo, MetricName

  seen: dict[str, list] = {}
  for result in results:
    for name, value in hparam_values(result).items():
      if value not in seen.setdefault(name, []):
        seen[name].append(value)
  infos = []
  for name, values in seen.items():
    numeric = all(isinstance(v, float) for v in values)
    domain = struct_pb2.ListValue()
    domain.extend(sorted(values) if numeric else sorted(values, key=str))
    kind = DataType.Value("DATA_TYPE_FLOAT64" if numeric else "DATA_TYPE_STRING")
    infos.append(HParamInfo(name=name, type=kind, domain_discrete=domain))
  metrics = [MetricInfo(name=MetricName(tag=tag), description=about) for tag, field, about in METRICS
             if any(field in result for result in results)]  # fmt: skip  # a metric no trial recorded: no column
  experiment = Experiment(hparam_infos=infos, metric_infos=metrics)
  return _summary("_hparams_/experiment", {"experiment": experiment})


def session_summaries(result: Mapping[str, Any]) -> list:
  """A trial's session start (its values), its metrics as scalars, and its end (status)."""
  from tensorboardX.proto.api_pb2 import Status
  from tensorboardX.proto.plugin_hparams_pb2 import SessionEndInfo, SessionStartInfo
  from tensorboardX.proto.summary_pb2 import Summary

  start = SessionStartInfo(start_time_secs=float(result.get("started") or 0.0))
  for name, value in hparam_values(result).items():
    if isinstance(value, float):
      start.hparams[name].number_value = value
    else:
      start.hparams[name].string_value = value
  scalars = Summary(
    value=[
      Summary.Value(tag=tag, simple_value=float(result[field]))
      for tag, field, _ in METRICS
      if isinstance(result.get(field), (int, float))
    ]
  )
  status = "STATUS_SUCCESS" if result.get("status") == "completed" else "STATUS_FAILURE"
  end = SessionEndInfo(status=Status.Value(status))
  return [
    _summary("_hparams_/session_start_info", {"session_start_info": start}),
    scalars,
    _summary("_hparams_/session_end_info", {"session_end_info": end}),
  ]


def _write_events(path: Path, summaries: Sequence[Any], step: int) -> None:
  """An event file holding ``summaries`` at ``step``, replacing ``path`` whole (atomically)."""
  from tensorboardX.proto.event_pb2 import Event
  from tensorboardX.record_writer import RecordWriter

  with files.atomic_replace(path) as tmp:
    writer = RecordWriter(tmp)
    now = time.time()
    writer.write(Event(wall_time=now, file_version="brain.Event:2").SerializeToString())
    for summary in summaries:
      writer.write(Event(wall_time=now, step=step, summary=summary).SerializeToString())
    writer.close()


def write(workdir: str | os.PathLike, results: Sequence[Mapping[str, Any]]) -> list[Path]:
  """The experiment and one session per completed trial of ``results`` (the sweep's last line per
  trial); the files written."""
  workdir = Path(workdir)
  completed = [r for r in results if r.get("status") == "completed"]
  if not completed:
    return []
  written = [workdir / EVENTS_FILE]
  _write_events(written[0], [experiment_summary(completed)], step=0)
  for result in completed:
    path = store.SweepStore(workdir).trial_dir(result["name"]) / EVENTS_FILE
    _write_events(path, session_summaries(result), step=int(result.get("epoch", 0)))
    written.append(path)
  return written
