"""End to end on a small real Fashion-MNIST subset: the files of a run, resume, and re-runs."""

import json
import os
import shutil

from conftest import tiny_config
import numpy as np
import pytest

from convnet import train
from convnet.errors import ConfigError
from convnet.rundir import provenance

pytestmark = pytest.mark.slow

SUMMARY_FIELDS = {
    "train_loss", "train_accuracy", "test_loss", "test_accuracy", "epoch_seconds", "examples_per_second",
    "num_params", "flops_per_example", "compile_seconds", "total_seconds", "status", "backend", "device", "code",
}  # fmt: skip
METRIC_FIELDS = {
  "epoch",
  "train_loss",
  "train_accuracy",
  "test_loss",
  "test_accuracy",
  "epoch_seconds",
  "examples_per_second",
}


def real_config(data_dir, **overrides):
  # The seed network itself; 2,000 train and 1,000 test images; 63 steps in calls of 20 (+3).
  return tiny_config(
      data_dir,
      **{"model.features": (64, 64), "model.dense_features": (128,), "dataset.num_train_examples": 2000,
         "dataset.num_test_examples": 1000, "batch_size": 32, "steps_per_call": 20, **overrides},
  )  # fmt: skip


@pytest.fixture(scope="module")
def finished_run(real_data_dir, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("run")
  summary = train.train_and_evaluate(real_config(real_data_dir), str(workdir))
  return workdir, summary


def read_metrics(workdir):
  return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_a_run_writes_config_metrics_summary_events_and_checkpoints(finished_run):
  workdir, summary = finished_run
  assert json.loads((workdir / "config.json").read_text())["model"]["features"] == [64, 64]
  metrics = read_metrics(workdir)
  assert [m["epoch"] for m in metrics] == [1, 2] and all(METRIC_FIELDS <= set(m) for m in metrics)
  assert SUMMARY_FIELDS <= set(summary) and summary == json.loads((workdir / "summary.json").read_text())
  assert summary["status"] == "completed" and summary["num_params"] == 243_786
  assert summary["test_accuracy"] == metrics[-1]["test_accuracy"] and summary["num_test_examples"] == 1000
  assert summary["test_accuracy"] > 0.6  # it learned (chance is 0.1)
  assert (workdir / "checkpoints" / "2").is_dir()
  # The code that ran: in config.json, summary.json and every epoch's line.
  code = summary["code"]
  assert code["source"] == provenance.source_digest() and code["ops"]["conv0"].startswith("ops.conv_relu_pool")
  assert json.loads((workdir / "config.json").read_text())["code"] == code
  assert [m["code"] for m in metrics] == [code["source"]] * 2 and summary["code_sources"] == [code["source"]]
  mask = os.umask(0o022)
  os.umask(mask)
  for name in ("config.json", "summary.json", "metrics.jsonl"):
    assert (workdir / name).stat().st_mode & 0o777 == 0o666 & ~mask, name
  from tensorboard.backend.event_processing import event_accumulator

  events = event_accumulator.EventAccumulator(str(workdir / "tensorboard"))
  events.Reload()
  accuracy = [(e.step, e.value) for e in events.Scalars("test_accuracy")]
  assert [step for step, _ in accuracy] == [1, 2]
  assert accuracy[-1][1] == pytest.approx(metrics[-1]["test_accuracy"])


def test_resume_gives_the_same_run_as_no_interruption(finished_run, real_data_dir, tmp_path):
  workdir, summary = finished_run
  train.train_and_evaluate(real_config(real_data_dir, num_epochs=1), str(tmp_path))  # "interrupted"
  assert len(read_metrics(tmp_path)) == 1
  resumed = train.train_and_evaluate(real_config(real_data_dir), str(tmp_path))
  assert [m["epoch"] for m in read_metrics(tmp_path)] == [1, 2]
  for key in ("train_loss", "test_loss", "test_accuracy"):
    assert resumed[key] == pytest.approx(summary[key], rel=1e-5), key


def test_killed_after_logging_but_before_checkpoint_retrains_that_epoch(finished_run, real_data_dir, tmp_path):
  workdir, summary = finished_run
  crashed = tmp_path / "crashed"
  shutil.copytree(workdir, crashed)
  shutil.rmtree(crashed / "checkpoints" / "2")  # epoch 2 was logged, then the process died
  (crashed / "summary.json").unlink()
  with open(crashed / "metrics.jsonl", "a") as f:
    f.write('{"epoch": 3, "train_lo')  # and a torn line from a write cut short
  resumed = train.train_and_evaluate(real_config(real_data_dir), str(crashed))
  assert [m["epoch"] for m in read_metrics(crashed)] == [1, 2]
  assert resumed["test_loss"] == pytest.approx(summary["test_loss"], rel=1e-5)


def test_a_finished_run_is_not_trained_again(finished_run, real_data_dir):
  workdir, summary = finished_run
  before = (workdir / "metrics.jsonl").read_bytes()
  again = train.train_and_evaluate(real_config(real_data_dir), str(workdir))
  assert again == summary and (workdir / "metrics.jsonl").read_bytes() == before


def test_a_workdir_refuses_a_different_config(finished_run, real_data_dir):
  workdir, _ = finished_run
  with pytest.raises(
    ConfigError, match=r"holds a run with a different config \(model.features: \[64, 64\] there, \[32, 32\] now\)"
  ):
    train.train_and_evaluate(real_config(real_data_dir, **{"model.features": (32, 32)}), str(workdir))


def test_more_epochs_continue_a_finished_run(finished_run, real_data_dir, tmp_path):
  workdir, summary = finished_run
  shutil.copytree(workdir, tmp_path / "more")
  longer = train.train_and_evaluate(real_config(real_data_dir, num_epochs=3), str(tmp_path / "more"))
  assert [m["epoch"] for m in read_metrics(tmp_path / "more")] == [1, 2, 3] and longer["epoch"] == 3
  assert np.isfinite(longer["test_loss"])
