"""The sweep driver's contract with a user who got something wrong: one line before anything is written,
a corrected command that goes on, a re-run that says there is nothing to do, records of old layouts."""

import logging

from conftest import free_port, sweep_config, tiny_config
import pytest

from convnet import cli, main, pruning, train
from convnet.errors import ConfigError, DataError
from convnet.rundir import files
from convnet.sweep import driver, settings, store


@pytest.mark.parametrize(
  "field, value, message",
  [("num_devices", 0, "num_devices=0 is not allowed"), ("backend", "gpu", "backend 'gpu' was asked for")],
)
@pytest.mark.slow
def test_a_config_error_that_holds_for_every_trial_is_one_error_before_anything_is_written(
  idx_dir, tmp_path, field, value, message
):
  with pytest.raises(ConfigError, match=message):
    driver.run(sweep_config(idx_dir, **{field: value}), tmp_path / "sweep")
  assert not (tmp_path / "sweep").exists()
  with pytest.raises(ConfigError, match=message):  # a single run alike
    train.train_and_evaluate(tiny_config(idx_dir, **{field: value}), str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()
  done = driver.run(sweep_config(idx_dir), tmp_path / "sweep")  # the corrected command trains
  assert [r["status"] for r in done.results] == ["completed"]


@pytest.mark.ray
def test_an_unreachable_ray_cluster_is_one_error_before_anything_is_written(idx_dir, tmp_path):
  pytest.importorskip("ray")
  address = f"127.0.0.1:{free_port()}"
  config = sweep_config(idx_dir, **{"sweep.executor.name": "ray", "sweep.executor.ray_address": address})
  with pytest.raises(ConfigError, match=f"ray_address='{address}': no Ray cluster answers there"):
    driver.run(config, tmp_path)
  assert not tmp_path.joinpath("config.json").exists() and not tmp_path.joinpath(".lock").exists()
  assert driver.run(sweep_config(idx_dir), tmp_path).results[0]["status"] == "completed"  # not refused


@pytest.mark.slow
def test_a_finished_sweep_run_again_says_every_trial_is_recorded(idx_dir, tmp_path, caplog):
  first = driver.run(sweep_config(idx_dir), tmp_path)
  with caplog.at_level(logging.INFO, logger="convnet"):
    again = driver.run(sweep_config(idx_dir), tmp_path)
  assert "all 1 trials are already recorded" in caplog.text and "nothing to train" in caplog.text
  assert "trial 1/1 done" not in caplog.text and again.results == first.results and again.text == first.text


@pytest.mark.slow
def test_a_trial_that_failed_on_a_bad_value_runs_again_once_the_config_changed(idx_dir, tmp_path):
  config = sweep_config(idx_dir)
  done = driver.run(config, tmp_path)
  (record,) = done.results
  failed = {**record, "status": "failed", "cause": "config", "error": "a bad value"}
  files.append_jsonl(tmp_path / "results.jsonl", failed)
  driver.run(config, tmp_path)  # the same config: its own failure stays
  assert store.read_results(tmp_path)[0]["status"] == "failed"
  driver.run(sweep_config(idx_dir, steps_per_call=3), tmp_path)  # changed: it may not fail again
  assert store.read_results(tmp_path)[0]["status"] == "completed"


def test_a_replay_of_a_sweep_with_no_completed_trial_is_one_line(tmp_path):
  files.write_json(tmp_path / "config.json", {"num_epochs": 2})
  files.append_jsonl(tmp_path / "results.jsonl", {"name": "a=1,seed=0", "overrides": {"a": 1}, "status": "failed"})
  values = cli.parse(["pruning", f"--workdir={tmp_path}"], pruning.define_flags)
  with pytest.raises(DataError, match="no completed trial to replay a strategy on"):
    pruning.main(values)
  with pytest.raises(DataError, match="nothing: no such directory; run a sweep into it first"):
    store.read_results(tmp_path / "nothing")  # not [] (a script would fail later, on "no completed trials")
  (tmp_path / "empty").mkdir()
  with pytest.raises(DataError, match="empty is not a sweep directory"):
    store.read_results(tmp_path / "empty")


def test_a_sweep_recorded_in_the_old_flat_layout_reads_in_todays():
  old = {
    "num_epochs": 5, "sweep": {"features": [[16, 16]], "seeds": [0, 1]}, "sweep_zip": [], "retry_failed": False,
    "report": {"rule": "within_std", "tolerance": 0.005}, "prune": "pareto", "prune_rungs": [1, 2],
    "prune_margin": 1.0, "executor": "local", "trial_resources": {"cpu": 1.0, "gpu": None}, "seeds_together": False,
  }  # fmt: skip
  new = settings.upgrade(old)
  assert new["sweep"] == {
    "axes": {"features": [[16, 16]], "seeds": [0, 1]}, "zip": [], "retry_failed": False, "seeds_together": False,
    "report": {"rule": "within_std", "tolerance": 0.005}, "prune": {"method": "pareto", "rungs": [1, 2], "margin": 1.0},
    "executor": {"name": "local", "trial_resources": {"cpu": 1.0, "gpu": None}},
  }  # fmt: skip
  assert set(new) == {"num_epochs", "sweep"} and settings.upgrade(new) == new


def test_a_sweep_config_in_the_old_flat_layout_gets_one_line_saying_where_the_axes_live(idx_dir):
  config = sweep_config(idx_dir)
  with config.unlocked():
    config.sweep = {"features": ((4, 4),), "seeds": (0,)}  # a user's config file written before config.sweep.axes
  with pytest.raises(ConfigError, match=r"config.sweep has no axes group \(it has features, seeds\): sweep axes"):
    driver.run(config, "unused")


def test_a_run_and_a_sweep_never_share_a_workdir(idx_dir, tmp_path):
  train.train_and_evaluate(tiny_config(idx_dir, num_epochs=1, tensorboard=False), str(tmp_path / "run"))
  with pytest.raises(ConfigError, match=r"run holds a single run, not a sweep \(its config.json\)"):
    driver.run(sweep_config(idx_dir), tmp_path / "run")
  assert not (tmp_path / "run" / "results.jsonl").exists()
  driver.run(sweep_config(idx_dir), tmp_path / "sweep")
  with pytest.raises(ConfigError, match=r"sweep holds a sweep, not a single run .*its trials/<name>/ folders"):
    train.train_and_evaluate(tiny_config(idx_dir, num_epochs=1), str(tmp_path / "sweep"))
  with pytest.raises(ConfigError, match=r"sweep holds a sweep with a different config \(num_epochs: 1 there, 2 now\)"):
    driver.run(sweep_config(idx_dir, num_epochs=2), tmp_path / "sweep")


@pytest.mark.parametrize(
  "old, new",
  [("--config.prune=pareto", "--config.sweep.prune.method"), ("--config.executor=ray", "--config.sweep.executor.name"),
   ("--config.sweep.features=((8,8),)", "--config.sweep.axes.features"), ("--config.sweep_zip=()", "--config.sweep.zip")],
)  # fmt: skip
def test_a_sweep_field_given_by_its_old_name_gets_its_new_name(old, new, capsys):
  with pytest.raises(SystemExit) as exit_:
    cli.parse(["main", "--config=configs/sweep.py:smoke", "--workdir=unused", old], main.define_flags)
  error = capsys.readouterr().err.strip()
  assert exit_.value.code == 1 and error.startswith(f"error: {old}: no such config field")
  assert error.endswith(f"sweep-level fields live under config.sweep now: {new}")
