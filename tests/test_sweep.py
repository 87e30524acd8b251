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

from convnet import configuration
from convnet.errors import ConfigError
from convnet.rundir import files
from convnet.sweep import driver, progress, settings
from convnet.sweep.trials import expand, resolve_axis

SWEEP = REPO / "configs" / "sweep.py"


def names(config):
  return [t.name for t in expand(config)]


def test_default_sweep_is_the_product_of_its_axes():
  config = configuration.load_config(SWEEP)
  trials = expand(config)
  assert len(trials) == 4 * 2 * 3
  by_name = {t.name: t for t in trials}
  trial = by_name["features=32-32,kernel_size=5,seed=1"]
  assert trial.overrides == {"model.features": (32, 32), "model.kernel_size": 5, "seed": 1}
  assert trial.config.model.features == (32, 32) and trial.config.model.kernel_size == 5 and trial.config.seed == 1
  assert "sweep" not in trial.config and trial.config.num_epochs == 5
  assert names(config) == names(configuration.load_config(SWEEP))  # stable


def test_zipped_axes_move_together():
  config = configuration.load_config(SWEEP)
  config.sweep.axes.features = ((16, 16), (64, 64))
  config.sweep.axes.kernel_size = (5, 3)
  config.sweep.axes.seeds = (0,)
  config.sweep.zip = (("features", "kernel_size"),)
  assert names(config) == ["features=16-16,kernel_size=5,seed=0", "features=64-64,kernel_size=3,seed=0"]
  config.sweep.axes.kernel_size = (5, 3, 7)
  with pytest.raises(ConfigError, match="axes of different lengths"):
    expand(config)


def test_an_axis_can_be_overridden_from_the_command_line():
  argv = ["prog", f"--config={SWEEP}", "--config.sweep.axes.seeds=(0,1,2,3,4)", "--config.sweep.axes.kernel_size=(3,)"]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True, sys_argv=argv)
  values(argv)
  trials = expand(values.config)
  assert len(trials) == 4 * 1 * 5 and trials[-1].name == "features=128-128,kernel_size=3,seed=4"


def test_named_variants():
  smoke = configuration.load_config(f"{SWEEP}:smoke")
  assert len(expand(smoke)) == 4 and smoke.num_epochs == 1 and smoke.dataset.num_train_examples == 2000
  depth = expand(configuration.load_config(f"{SWEEP}:depth"))
  assert sorted({len(t.config.model.features) for t in depth}) == [1, 2, 3] and len(depth) == 9
  wide_config = configuration.load_config(f"{SWEEP}:wide")
  wide = expand(wide_config)
  assert len(wide) == 4 * 4 * 2 * 3 and wide_config.sweep.prune.method == "pareto"
  assert {(16, 128), (128, 16), (64, 64)} <= {t.config.model.features for t in wide}  # each layer on its own
  with pytest.raises(ConfigError, match="no variant 'tall'; use configs/sweep.py, :smoke, :depth or :wide"):
    configuration.load_config(f"{SWEEP}:tall")


def test_axis_names_resolve_to_one_config_field():
  base = settings.trial_base(configuration.load_config(SWEEP)).to_dict()
  assert resolve_axis("learning_rate", base) == "learning_rate"
  assert resolve_axis("model__padding", base) == "model.padding"
  with pytest.raises(ConfigError, match="sweep axis 'filters' matches no config field"):
    resolve_axis("filters", base)
  with pytest.raises(ConfigError, match=r"sweep axis 'name' is ambiguous"):
    resolve_axis("name", {"a": {"name": 1}, "b": {"name": 2}})


@pytest.mark.slow
def test_impossible_and_failing_trials_are_recorded_and_the_sweep_goes_on(idx_dir, tmp_path):
  config = sweep_config(idx_dir, **{"sweep.axes.features": ((4, 4), (4,) * 5)})
  with config.unlocked():
    config.sweep.axes.learning_rate = (1e-3, 1e12)
    config.optimizer = "sgd"
    config.momentum = 0.0
  results = {r["name"]: r for r in driver.run(config, tmp_path).results}
  assert len(results) == 4
  skipped = [r for r in results.values() if r["status"] == "skipped"]
  assert len(skipped) == 2 and all("conv3: a 3x3 kernel does not fit its 1x1 input" in r["error"] for r in skipped)
  assert not (tmp_path / "trials" / "features=4-4-4-4-4,kernel_size=3,learning_rate=0.001,seed=0").exists()
  failed = results["features=4-4,kernel_size=3,learning_rate=1000000000000.0,seed=0"]
  assert failed["status"] == "failed" and "NaN/inf training loss" in failed["error"]
  ok = results["features=4-4,kernel_size=3,learning_rate=0.001,seed=0"]
  assert ok["status"] == "completed" and 0 <= ok["test_accuracy"] <= 1 and ok["num_params"] > 0
  written = {p.name for p in tmp_path.iterdir()}
  assert {"report.md", "results.csv"} <= written
  assert not {"pareto.png", "learning_curves.png"} & written  # one configuration, one epoch: nothing to draw
  summary = files.read_json(tmp_path / "trials" / ok["name"] / "summary.json")
  outside = summary["total_seconds"] - summary["train_seconds"]
  assert summary["resumed_from"] == 0 and outside > 0
  # The failed trial ran too (it stopped in epoch 1) but has no completed epoch: only the completed one counts.
  assert f"of the 1 trial(s) trained in one go): median {outside:.2f} s" in (tmp_path / "report.md").read_text()


KILL_CONFIG = """
import sys
sys.path[:0] = [{repo!r}, {tests!r}]
from conftest import sweep_config

def get_config():
  return sweep_config({data!r}, num_epochs=40, **{{"sweep.axes.seeds": (0, 1)}})
"""


def start_sweep(config_path, workdir, *flags, own_cache=False):
  env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
  if own_cache:  # without the suite's shared compilation cache: the sweep keeps its own, in its directory
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
  return subprocess.Popen(
      [sys.executable, "-m", "convnet.main", f"--config={config_path}", f"--workdir={workdir}", *flags],
      cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
  )  # fmt: skip


def start_and_kill_9(config_path, workdir, metrics, lines=3, own_cache=False):
  """Starts the sweep and kills it (-9) once ``metrics`` (a trial's metrics.jsonl) has ``lines`` lines."""
  process = start_sweep(config_path, workdir, own_cache=own_cache)
  deadline = time.time() + 240
  while time.time() < deadline and len(files.read_jsonl(metrics)) < lines:
    time.sleep(0.02)
  assert process.poll() is None, "the sweep ended before it could be killed: " + process.stderr.read()
  process.send_signal(signal.SIGKILL)
  process.wait()


@pytest.mark.slow
def test_kill_9_mid_trial_then_rerun_records_every_trial_exactly_once(idx_dir, tmp_path):
  config_path = tmp_path / "kill_sweep.py"
  config_path.write_text(KILL_CONFIG.format(repo=str(REPO), tests=str(REPO / "tests"), data=str(idx_dir)))
  workdir = tmp_path / "sweep"
  first = workdir / "trials" / "features=4-4,kernel_size=3,seed=0" / "metrics.jsonl"
  start_and_kill_9(config_path, workdir, first)
  killed_at = len(files.read_jsonl(first))
  assert 3 <= killed_at < 40  # killed mid-trial
  assert not (workdir / "results.jsonl").exists()

  rerun = start_sweep(config_path, workdir)
  assert rerun.wait(timeout=300) == 0, rerun.stderr.read()
  results = files.read_jsonl(workdir / "results.jsonl")
  assert sorted(r["name"] for r in results) == [
    "features=4-4,kernel_size=3,seed=0",
    "features=4-4,kernel_size=3,seed=1",
  ]
  assert all(r["status"] == "completed" and r["epoch"] == 40 for r in results)
  assert [m["epoch"] for m in files.read_jsonl(first)] == list(range(1, 41))  # resumed, no epoch twice

  # Killed mid-write of results.jsonl: a torn line, and a finished trial whose line never landed.
  text = (workdir / "results.jsonl").read_text().splitlines(keepends=True)
  (workdir / "results.jsonl").write_text(text[0] + '{"name": "features=4-4,kernel_size=3,se')
  again = start_sweep(config_path, workdir)
  assert again.wait(timeout=300) == 0, again.stderr.read()
  lines = (workdir / "results.jsonl").read_text().splitlines()
  assert sorted(json.loads(line)["name"] for line in lines) == sorted(r["name"] for r in results)
  assert [m["epoch"] for m in files.read_jsonl(first)] == list(range(1, 41))  # not trained again


def test_eta_fits_fixed_cost_plus_flops():
  assert progress.estimate_seconds([], [1.0]) is None
  # One size seen: proportional to FLOPs.
  assert progress.estimate_seconds([(2.0, 10.0)], [2.0, 4.0]) == pytest.approx(30.0)
  # Two sizes: time = 5 + 2.5 * FLOPs fits both exactly (10 s at 2, 15 s at 4).
  assert progress.estimate_seconds([(2.0, 10.0), (4.0, 15.0)], [8.0, 2.0]) == pytest.approx(25.0 + 10.0)


PRUNE_CONFIG = """
import sys
sys.path[:0] = [{repo!r}, {tests!r}]
from conftest import sweep_config

def get_config():
  # Two configurations, one seed each; a margin of 100 points: at the rung (epoch 20), the slower is
  # dominated by the faster whatever their accuracies (no leader kept), so exactly one trains on to epoch 40.
  return sweep_config({data!r}, num_epochs=40, **{{"sweep.prune.method": "pareto", "sweep.prune.rungs": (20,),
                      "sweep.prune.one_seed_margin": 1.0, "sweep.prune.keep_leaders": False}},
                      **{{"sweep.axes.features": ((4, 4), (8, 8))}})
"""


@pytest.mark.slow
def test_a_pruned_sweep_resumes_after_kill_9_and_never_trains_a_pruned_trial_again(idx_dir, tmp_path):
  config_path = tmp_path / "prune_sweep.py"
  config_path.write_text(PRUNE_CONFIG.format(repo=str(REPO), tests=str(REPO / "tests"), data=str(idx_dir)))
  workdir = tmp_path / "sweep"
  second = workdir / "trials" / "features=8-8,kernel_size=3,seed=0" / "metrics.jsonl"
  start_and_kill_9(config_path, workdir, second, own_cache=True)  # while the rung's second trial trains
  assert not (workdir / "results.jsonl").exists()  # killed before the rung's decision

  rerun = start_sweep(config_path, workdir, own_cache=True)
  assert rerun.wait(timeout=300) == 0, rerun.stderr.read()
  results = {r["name"]: r for r in files.read_jsonl(workdir / "results.jsonl")}
  assert len(results) == len(files.read_jsonl(workdir / "results.jsonl")) == 2  # every trial once
  [pruned] = [r for r in results.values() if r["status"] == "pruned"]
  [kept] = [r for r in results.values() if r["status"] == "completed"]
  assert pruned["epoch"] == pruned["pruned_at"] == 20 and kept["epoch"] == 40
  assert pruned["pruned_by"] + ",seed=0" == kept["name"] and pruned["speedup"] > 1
  assert 0 <= pruned["test_accuracy"] <= 1 and "x faster and" in pruned["error"]  # the verdict in words
  trial_epochs = {n: [m["epoch"] for m in files.read_jsonl(workdir / "trials" / n / "metrics.jsonl")] for n in results}
  assert trial_epochs[pruned["name"]] == list(range(1, 21))  # stopped at the rung, each epoch once
  assert trial_epochs[kept["name"]] == list(range(1, 41))
  report_text = (workdir / "report.md").read_text()
  assert (
    "## Pruning" in report_text and "Trial-epochs trained: 60 of the full grid's 80 (75%; saved 20)." in report_text
  )
  assert f"| {pruned['name'].removesuffix(',seed=0')} | 20 | 1 |" in report_text
  assert (workdir / "jax_cache").is_dir()  # the programs were cached for the rungs and the resume

  # The same command again changes nothing; without pruning, the pruned trial trains on to epoch 40 (both with
  # the sweep's own cache, which holds its programs: the suite's need not, ~5 s of CPU to compile them again).
  assert start_sweep(config_path, workdir, own_cache=True).wait(timeout=300) == 0
  assert len(files.read_jsonl(workdir / "results.jsonl")) == 2
  full = start_sweep(config_path, workdir, "--config.sweep.prune.method=None", own_cache=True)
  assert full.wait(timeout=300) == 0, full.stderr.read()
  final = {r["name"]: r for r in files.read_jsonl(workdir / "results.jsonl")}  # the later line wins
  assert final[pruned["name"]]["status"] == "completed" and final[pruned["name"]]["epoch"] == 40
  epochs = [m["epoch"] for m in files.read_jsonl(workdir / "trials" / pruned["name"] / "metrics.jsonl")]
  assert epochs == list(range(1, 41))  # resumed from its checkpoint at the rung


CACHE_KEYS = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
DEFAULTS = dict(zip(CACHE_KEYS, (None, 1.0), strict=True))  # JAX's own


def test_compilation_cache_holds_the_programs_and_leaves_the_settings_as_they_were(tmp_path):
  import jax
  from jax.experimental.compilation_cache import compilation_cache as jax_cache
  import jax.numpy as jnp

  from convnet import runtime

  suites = {key: getattr(jax.config, key) for key in CACHE_KEYS}  # the suite's shared cache (conftest.py)
  for key, value in DEFAULTS.items():
    jax.config.update(key, value)
  jax_cache.reset_cache()
  try:
    with runtime.compilation_cache(tmp_path / "cache"):
      assert float(jax.jit(lambda x: x * 3.0 + 1.0)(jnp.float32(2.0))) == 7.0
    assert any((tmp_path / "cache").iterdir())  # even a quick compile is kept
    assert {key: getattr(jax.config, key) for key in CACHE_KEYS} == DEFAULTS
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "users"))
    with runtime.compilation_cache(tmp_path / "mine"):  # the user's own cache directory is kept
      assert float(jax.jit(lambda x: x * 5.0)(jnp.float32(2.0))) == 10.0
    assert not (tmp_path / "mine").exists()
  finally:
    for key, value in suites.items():
      jax.config.update(key, value)
    jax_cache.reset_cache()  # the rest of the suite compiles with its shared cache again


RACE_CONFIG = """
import sys
sys.path[:0] = [{repo!r}, {tests!r}]
from conftest import sweep_config

def get_config():
  # Two configurations racing from two of three seeds, a rung at epoch 2 of 4; an answer asked 99.9% sure,
  # so the third seeds are added where they decide. Accuracy only (per_doubling 0, speeds within 99% equal):
  # nothing is left to the two runs' timing noise.
  return sweep_config({data!r}, num_epochs=4, **{{"sweep.prune.method": "race", "sweep.prune.rungs": (2,),
                      "sweep.report.confidence": 0.999, "sweep.axes.features": ((4, 4), (8, 8)),
                      "sweep.axes.seeds": (0, 1, 2), "sweep.report.per_doubling": 0.0,
                      "sweep.prune.speed_margin": 0.99}})
"""


def decisions(workdir):
  """Each recorded trial's status and epochs, and the sweet spot: what a sweep decided (its timings, and so the
  shares of draws, differ from run to run)."""
  lines = files.read_jsonl(workdir / "results.jsonl")
  epochs = {r["name"]: [m["epoch"] for m in files.read_jsonl(workdir / "trials" / r["name"] / "metrics.jsonl")]
            for r in lines}  # fmt: skip
  answer = json.loads((workdir / "answer.json").read_text())
  return sorted((r["name"], r["status"], r["epoch"], tuple(epochs[r["name"]])) for r in lines), answer["sweet_spot"]


@pytest.mark.slow
def test_a_race_killed_at_any_moment_decides_as_an_uninterrupted_one(idx_dir, tmp_path):
  config_path = tmp_path / "race_sweep.py"
  config_path.write_text(RACE_CONFIG.format(repo=str(REPO), tests=str(REPO / "tests"), data=str(idx_dir)))
  whole = start_sweep(config_path, tmp_path / "whole")
  assert whole.wait(timeout=300) == 0, whole.stderr.read()
  expected = decisions(tmp_path / "whole")
  assert len(expected[0]) >= 4  # both configurations raced; every recorded trial once
  workdir = tmp_path / "killed"
  # Killed while a trial trains on from the rung to the last epoch, after the rung's decision.
  start_and_kill_9(config_path, workdir, workdir / "trials" / "features=4-4,kernel_size=3,seed=0" / "metrics.jsonl")
  rerun = start_sweep(config_path, workdir)
  assert rerun.wait(timeout=300) == 0, rerun.stderr.read()
  assert decisions(workdir) == expected
