"""The sweep: expansion, names, variants, isolation of bad trials, and resume after kill -9."""

import json
import os
import signal
import subprocess
import sys
import time

from absl import flags
from conftest import REPO, sweep_config
from ml_collections import config_flags
import pytest

from convnet import configuration, logs, sweep
from convnet.errors import ConfigError

SWEEP = REPO / "configs" / "sweep.py"


def names(config):
  return [t.name for t in sweep.expand(config)]


def test_default_sweep_is_the_product_of_its_axes():
  config = configuration.load_config(SWEEP)
  trials = sweep.expand(config)
  assert len(trials) == 4 * 2 * 3
  by_name = {t.name: t for t in trials}
  trial = by_name["features=32-32,kernel_size=5,seed=1"]
  assert trial.overrides == {"model.features": (32, 32), "model.kernel_size": 5, "seed": 1}
  assert trial.config.model.features == (32, 32) and trial.config.model.kernel_size == 5 and trial.config.seed == 1
  assert "sweep" not in trial.config and trial.config.num_epochs == 5
  assert names(config) == names(configuration.load_config(SWEEP))  # stable


def test_zipped_axes_move_together():
  config = configuration.load_config(SWEEP)
  config.sweep.features = ((16, 16), (64, 64))
  config.sweep.kernel_size = (5, 3)
  config.sweep.seeds = (0,)
  config.sweep_zip = (("features", "kernel_size"),)
  assert names(config) == ["features=16-16,kernel_size=5,seed=0", "features=64-64,kernel_size=3,seed=0"]
  config.sweep.kernel_size = (5, 3, 7)
  with pytest.raises(ConfigError, match="axes of different lengths"):
    sweep.expand(config)


def test_an_axis_can_be_overridden_from_the_command_line():
  argv = ["prog", f"--config={SWEEP}", "--config.sweep.seeds=(0,1,2,3,4)", "--config.sweep.kernel_size=(3,)"]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True, sys_argv=argv)
  values(argv)
  trials = sweep.expand(values.config)
  assert len(trials) == 4 * 1 * 5 and trials[-1].name == "features=128-128,kernel_size=3,seed=4"


def test_named_variants():
  smoke = configuration.load_config(f"{SWEEP}:smoke")
  assert len(sweep.expand(smoke)) == 4 and smoke.num_epochs == 1 and smoke.dataset.num_train_examples == 2000
  depth = sweep.expand(configuration.load_config(f"{SWEEP}:depth"))
  assert sorted({len(t.config.model.features) for t in depth}) == [1, 2, 3] and len(depth) == 9
  with pytest.raises(ConfigError, match="no variant 'wide'"):
    configuration.load_config(f"{SWEEP}:wide")


def test_axis_names_resolve_to_one_config_field():
  base = sweep.base_config(configuration.load_config(SWEEP)).to_dict()
  assert sweep.resolve_axis("learning_rate", base) == "learning_rate"
  assert sweep.resolve_axis("model__padding", base) == "model.padding"
  with pytest.raises(ConfigError, match="sweep axis 'filters' matches no config field"):
    sweep.resolve_axis("filters", base)
  with pytest.raises(ConfigError, match=r"sweep axis 'name' is ambiguous"):
    sweep.resolve_axis("name", {"a": {"name": 1}, "b": {"name": 2}})


def test_impossible_and_failing_trials_are_recorded_and_the_sweep_goes_on(idx_dir, tmp_path):
  config = sweep_config(idx_dir, **{"sweep.features": ((4, 4), (4,) * 5)})
  with config.unlocked():
    config.sweep.learning_rate = (1e-3, 1e12)
    config.optimizer = "sgd"
    config.momentum = 0.0
  results = {r["name"]: r for r in sweep.run(config, tmp_path).results}
  assert len(results) == 4
  skipped = [r for r in results.values() if r["status"] == "skipped"]
  assert len(skipped) == 2 and all("conv3: a 3x3 kernel does not fit its 1x1 input" in r["error"] for r in skipped)
  assert not (tmp_path / "trials" / "features=4-4-4-4-4,kernel_size=3,learning_rate=0.001,seed=0").exists()
  failed = results["features=4-4,kernel_size=3,learning_rate=1000000000000.0,seed=0"]
  assert failed["status"] == "failed" and "NaN/inf training loss" in failed["error"]
  ok = results["features=4-4,kernel_size=3,learning_rate=0.001,seed=0"]
  assert ok["status"] == "completed" and 0 <= ok["test_accuracy"] <= 1 and ok["num_params"] > 0
  files = {p.name for p in tmp_path.iterdir()}
  assert {"report.md", "results.csv"} <= files
  assert not {"pareto.png", "learning_curves.png"} & files  # one configuration, one epoch: nothing to draw


KILL_CONFIG = """
import sys
sys.path[:0] = [{repo!r}, {tests!r}]
from conftest import sweep_config

def get_config():
  return sweep_config({data!r}, num_epochs=40, **{{"sweep.seeds": (0, 1)}})
"""


def start_sweep(config_path, workdir):
  env = {**os.environ, "PYTHONPATH": str(REPO)}
  return subprocess.Popen(
      [sys.executable, "-m", "convnet.main", f"--config={config_path}", f"--workdir={workdir}"],
      cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
  )  # fmt: skip


def test_kill_9_mid_trial_then_rerun_records_every_trial_exactly_once(idx_dir, tmp_path):
  config_path = tmp_path / "kill_sweep.py"
  config_path.write_text(KILL_CONFIG.format(repo=str(REPO), tests=str(REPO / "tests"), data=str(idx_dir)))
  workdir = tmp_path / "sweep"
  first = workdir / "trials" / "features=4-4,kernel_size=3,seed=0" / "metrics.jsonl"
  process = start_sweep(config_path, workdir)
  deadline = time.time() + 240
  while time.time() < deadline and len(logs.read_jsonl(first)) < 3:
    time.sleep(0.02)
  assert process.poll() is None, "the sweep ended before it could be killed: " + process.stderr.read()
  process.send_signal(signal.SIGKILL)
  process.wait()
  killed_at = len(logs.read_jsonl(first))
  assert 3 <= killed_at < 40  # killed mid-trial
  assert not (workdir / "results.jsonl").exists()

  rerun = start_sweep(config_path, workdir)
  assert rerun.wait(timeout=300) == 0, rerun.stderr.read()
  results = logs.read_jsonl(workdir / "results.jsonl")
  assert sorted(r["name"] for r in results) == [
    "features=4-4,kernel_size=3,seed=0",
    "features=4-4,kernel_size=3,seed=1",
  ]
  assert all(r["status"] == "completed" and r["epoch"] == 40 for r in results)
  assert [m["epoch"] for m in logs.read_jsonl(first)] == list(range(1, 41))  # resumed, no epoch twice

  # Killed mid-write of results.jsonl: a torn line, and a finished trial whose line never landed.
  text = (workdir / "results.jsonl").read_text().splitlines(keepends=True)
  (workdir / "results.jsonl").write_text(text[0] + '{"name": "features=4-4,kernel_size=3,se')
  again = start_sweep(config_path, workdir)
  assert again.wait(timeout=300) == 0, again.stderr.read()
  lines = (workdir / "results.jsonl").read_text().splitlines()
  assert sorted(json.loads(line)["name"] for line in lines) == sorted(r["name"] for r in results)
  assert [m["epoch"] for m in logs.read_jsonl(first)] == list(range(1, 41))  # not trained again


def test_eta_fits_fixed_cost_plus_flops():
  assert sweep.estimate_seconds([], [1.0]) is None
  # One size seen: proportional to FLOPs.
  assert sweep.estimate_seconds([(2.0, 10.0)], [2.0, 4.0]) == pytest.approx(30.0)
  # Two sizes: time = 5 + 2.5 * FLOPs fits both exactly (10 s at 2, 15 s at 4).
  assert sweep.estimate_seconds([(2.0, 10.0), (4.0, 15.0)], [8.0, 2.0]) == pytest.approx(25.0 + 10.0)
