"""The sweep in TensorBoard's HParams dashboard, read back by TensorBoard itself: its event reader and
its hparams plugin, served by a real `tensorboard` process."""

import json
from pathlib import Path
import subprocess
import sys
import time
import urllib.request

from conftest import free_port, sweep_config
import pytest
from tensorboard.backend.event_processing import plugin_event_multiplexer
from tensorboard.plugins.hparams import metadata
from tensorboard.util import tensor_util

from convnet.results import report
from convnet.rundir import files
from convnet.sweep import driver

pytestmark = pytest.mark.slow

FIELDS = {"sweep.axes.features": ((4, 4), (6, 6)), "sweep.axes.seeds": (0, 1), "tensorboard": True}


@pytest.fixture(scope="module")
def swept(idx_dir, tmp_path_factory) -> Path:
  workdir = tmp_path_factory.mktemp("hparams") / "sweep"
  driver.run(sweep_config(idx_dir, **FIELDS, **{"inference.seconds": 0.02}), workdir)  # latency and throughput too
  return workdir


def read_back(workdir: Path):
  """(experiment, {run: (hparams, {metric: value})}) through TensorBoard's own reader."""
  multiplexer = plugin_event_multiplexer.EventMultiplexer()
  multiplexer.AddRunsFromDirectory(str(workdir))
  multiplexer.Reload()
  content = multiplexer.PluginRunToTagToContent(metadata.PLUGIN_NAME)
  experiment = metadata.parse_experiment_plugin_data(content["."][metadata.EXPERIMENT_TAG])
  sessions = {}
  for run, tags in content.items():
    if metadata.SESSION_START_INFO_TAG in tags:
      start = metadata.parse_session_start_info_plugin_data(tags[metadata.SESSION_START_INFO_TAG])
      values = {k: v.number_value if v.HasField("number_value") else v.string_value for k, v in start.hparams.items()}
      metrics = {
        m.name.tag: float(tensor_util.make_ndarray(multiplexer.Tensors(run, m.name.tag)[-1].tensor_proto))
        for m in experiment.metric_infos
      }
      sessions[run] = (values, metrics)
  return experiment, sessions


def test_each_trial_is_a_session_with_its_axes_and_metrics(swept):
  experiment, sessions = read_back(swept)
  assert {h.name for h in experiment.hparam_infos} == {"features", "kernel_size", "seed"}
  features = next(h for h in experiment.hparam_infos if h.name == "features")
  assert list(features.domain_discrete) == ["4-4", "6-6"]
  assert {m.name.tag for m in experiment.metric_infos} == {"validation_accuracy", "test_accuracy", "test_loss", "seconds_per_epoch",
                                                           "latency_ms", "throughput", "num_params"}  # fmt: skip
  results = {r["name"]: r for r in files.read_jsonl(swept / "results.jsonl")}
  assert sorted(sessions) == sorted(f"trials/{name}" for name in results)
  for name, result in results.items():
    values, metrics = sessions[f"trials/{name}"]
    assert values == {"features": name.split(",")[0].split("=")[1], "kernel_size": 3.0, "seed": float(result["seed"])}
    assert metrics["test_accuracy"] == pytest.approx(result["test_accuracy"])
    assert metrics["test_loss"] == pytest.approx(result["test_loss"], rel=1e-6)
    assert metrics["seconds_per_epoch"] == pytest.approx(result["epoch_seconds"], rel=1e-6)
    assert metrics["num_params"] == result["num_params"]
    assert metrics["latency_ms"] == pytest.approx(result["latency_ms"], rel=1e-6)


def test_a_rerun_and_the_report_write_nothing_twice(swept, idx_dir):
  before = read_back(swept)
  events = sorted(swept.rglob("events.out.tfevents.hparams"))
  driver.run(sweep_config(idx_dir, **FIELDS), swept)  # all recorded: nothing trains, the report is made again
  report.write_report(swept)
  assert sorted(swept.rglob("events.out.tfevents.hparams")) == events
  assert read_back(swept) == before  # one session per trial, each value once


def _post(url: str, body: dict) -> dict:
  request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                   headers={"Content-Type": "application/json", "X-XSRF-Protected": "1"})  # fmt: skip
  with urllib.request.urlopen(request, timeout=30) as response:
    return json.loads(response.read())


def test_tensorboards_hparams_plugin_lists_a_session_group_per_trial(swept):
  port = free_port()
  server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", f"--logdir={swept}", f"--port={port}",
                             "--host=127.0.0.1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
  try:
    base = f"http://127.0.0.1:{port}/data/plugin/hparams"
    deadline = time.time() + 120
    while True:
      try:
        experiment = _post(f"{base}/experiment", {"experimentName": ""})
        if experiment.get("hparamInfos"):
          break
      except OSError:
        pass
      assert time.time() < deadline and server.poll() is None, "TensorBoard did not serve the experiment"
      time.sleep(1)
    groups = _post(f"{base}/session_groups", {
      "experimentName": "", "startIndex": 0, "sliceSize": 100,
      "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
      "colParams": [{"hparam": "features"}, {"metric": {"tag": "test_accuracy"}}],
    })  # fmt: skip
  finally:
    server.kill()
    server.communicate()
  names = sorted(session["name"] for group in groups["sessionGroups"] for session in group["sessions"])
  results = {r["name"]: r for r in files.read_jsonl(swept / "results.jsonl")}
  assert names == sorted(f"trials/{name}" for name in results)
  for group in groups["sessionGroups"]:
    (session,) = group["sessions"]
    name = session["name"].split("/", 1)[1]
    accuracy = next(m["value"] for m in session["metricValues"] if m["name"]["tag"] == "test_accuracy")
    assert accuracy == pytest.approx(results[name]["test_accuracy"])
    assert group["hparams"]["features"] == name.split(",")[0].split("=")[1]
