"""Executors: the config fields, seeds trained together, and sweeps on Ray (a local Ray and a `ray start`
cluster) giving the local executor's results, every trial once, through a worker or a driver kill -9.

Every Ray here runs in its own short temporary directory (RAY_TMPDIR, or --temp-dir) with a token of
its own (RAY_AUTH_TOKEN, so nothing is written under the user's home), and is stopped by killing the
processes that have that directory open: nothing else on the machine is touched.
"""

import contextlib
import importlib.util
import json
import os
from pathlib import Path
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from conftest import REPO, free_port, sweep_config
import pytest
from test_hparams import read_back

from convnet import train
from convnet.errors import ConfigError
from convnet.rundir import files
from convnet.sweep import driver, store
from convnet.sweep.executors import base, local, on_ray
from convnet.sweep.trials import expand

RAY_TIMEOUT = 420
NAMES = ["features=4-4,kernel_size=3,seed=0", "features=4-4,kernel_size=3,seed=1"]


def test_executor_fields_are_checked_before_anything_runs(idx_dir, tmp_path):
  for field, value, message in (
    ("sweep.executor.name", "spark", "sweep.executor.name='spark' is not one of"),
    ("sweep.executor.max_failures", -1, "sweep.executor.max_failures=-1"),
    ("sweep.executor.trial_resources.gpu", -0.5, "sweep.executor.trial_resources.gpu=-0.5"),
    ("sweep.executor.ray_address", " ", "sweep.executor.ray_address=' '"),
  ):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
      driver.run(sweep_config(idx_dir, **{field: value}), tmp_path / field)
    assert not (tmp_path / field).exists()


def test_executor_fields_do_not_change_trial_names_and_a_sweep_may_resume_with_another_executor(idx_dir, tmp_path):
  plain = expand(sweep_config(idx_dir))
  elsewhere = {"sweep.executor.name": "ray", "sweep.seeds_together": True, "sweep.executor.trial_resources.cpu": 0.5}
  ray = expand(sweep_config(idx_dir, **elsewhere))
  assert [t.name for t in plain] == [t.name for t in ray]
  assert [t.config.to_dict() for t in plain] == [t.config.to_dict() for t in ray]
  recorded = store.SweepStore(tmp_path)
  recorded.write_config(sweep_config(idx_dir).to_dict())
  recorded.check_same_sweep(sweep_config(idx_dir, **elsewhere).to_dict())  # no error: the executor is no result


@pytest.mark.slow
def test_seeds_together_write_each_seed_as_its_own_trial_equal_to_separate_trials(idx_dir, tmp_path):
  fields = {"sweep.axes.seeds": (0, 1), "num_epochs": 2}
  apart = driver.run(sweep_config(idx_dir, **fields), tmp_path / "apart")
  together = driver.run(sweep_config(idx_dir, **{"sweep.seeds_together": True}, **fields), tmp_path / "together")
  lines = {d: files.read_jsonl(tmp_path / d / "results.jsonl") for d in ("apart", "together")}
  assert [r["name"] for r in lines["apart"]] == [r["name"] for r in lines["together"]] == NAMES
  for one, other in zip(lines["apart"], lines["together"], strict=True):
    assert other["status"] == "completed" and other["epoch"] == 2 and other["seeds_together"] == 2
    assert other["test_loss"] == pytest.approx(one["test_loss"], rel=1e-4)
    assert other["test_accuracy"] == pytest.approx(one["test_accuracy"], abs=1 / 103 + 1e-9)
    trial = tmp_path / "together" / "trials" / other["name"]
    assert [m["epoch"] for m in files.read_jsonl(trial / "metrics.jsonl")] == [1, 2]
    assert files.read_json(trial / "summary.json")["status"] == "completed"
    assert files.read_json(trial / "config.json")["seed"] == other["seed"]
  assert lines["together"][0]["test_loss"] != lines["together"][1]["test_loss"]
  assert "seeds were trained together (2 per program)" in (tmp_path / "together" / "report.md").read_text()
  assert apart.sweet_spot.name == together.sweet_spot.name


@pytest.mark.slow
def test_seeds_together_resume_from_the_last_epoch_every_seed_has(idx_dir, tmp_path):
  config = sweep_config(idx_dir, num_epochs=2, **{"sweep.axes.seeds": (0, 1)})
  trials = expand(config)
  dirs = [str(tmp_path / t.name) for t in trials]
  configs = [t.config.to_dict() for t in trials]
  first = train.fit([{**c, "num_epochs": 1} for c in configs], dirs)  # as if stopped after epoch 1
  assert [s["epoch"] for s in first] == [1, 1]
  # Seed 1 lost its epoch-1 checkpoint: the group starts again from the start for both.
  shutil.rmtree(Path(dirs[1]) / "checkpoints")
  again = train.fit(configs, dirs)
  assert [s["epoch"] for s in again] == [2, 2]
  for d in dirs:
    assert [m["epoch"] for m in files.read_jsonl(Path(d) / "metrics.jsonl")] == [1, 2]  # none twice
  alone = train.fit(configs[:1], dirs[:1])  # finished: not trained again
  assert alone == again[:1]


# ------------------------------------------------------------------------------------------ on Ray

needs_ray = pytest.mark.skipif(
  importlib.util.find_spec("ray") is None, reason="Ray is in the test extra (pip install -e '.[test]')"
)

SWEEP_CONFIG = """
import sys
sys.path[:0] = [{repo!r}, {tests!r}]
from conftest import sweep_config

def get_config():
  return sweep_config({data!r}, num_epochs={epochs}, tensorboard=True, **{{"sweep.axes.seeds": (0, 1)}})
"""


@contextlib.contextmanager
def own_ray_env():
  """A short temporary directory for Ray's sockets and logs, a fresh token, and at the end every
  process that has the directory open killed (Ray's, and only those)."""
  temp = tempfile.mkdtemp(prefix="cr", dir="/tmp")  # short: Ray's unix sockets live in it
  env = {
    **os.environ,
    "PYTHONPATH": str(REPO / "src"),
    "RAY_TMPDIR": temp,
    "RAY_AUTH_TOKEN": secrets.token_hex(16),
    "RAY_AUTH_MODE": "token",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # a `ray start` cluster in a test listens on loopback only
    "RAY_USAGE_STATS_ENABLED": "0",
  }
  env.pop("RAY_ADDRESS", None)
  try:
    yield env, temp
  finally:
    _kill_processes_using(temp)
    shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture
def ray_env():
  """A Ray environment of the test's own (own_ray_env): for a test that starts a local Ray, or kills one's workers."""
  with own_ray_env() as found:
    yield found


@pytest.fixture(scope="module")
def ray_cluster():
  """One `ray start --head` cluster on 127.0.0.1 (2 CPUs) in a Ray environment of its own, for the tests that need
  *a* cluster and kill none of its processes (a driver is the test's): (env, address). Started once for them,
  not a local Ray each."""
  with own_ray_env() as (env, temp):
    port = free_port()
    ray_cli = str(Path(sys.executable).with_name("ray"))
    start = [ray_cli, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
             "--include-dashboard=false", f"--temp-dir={temp}", "--disable-usage-stats"]  # fmt: skip
    started = subprocess.run(start, env=env, capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stderr[-3000:]
    yield env, f"127.0.0.1:{port}"


def _kill_processes_using(directory: str) -> None:
  for _ in range(3):
    found = []
    for proc in Path("/proc").iterdir():
      if not proc.name.isdigit() or int(proc.name) == os.getpid():
        continue
      try:
        held = [os.readlink(fd) for fd in (proc / "fd").iterdir()]
        held.append((proc / "cmdline").read_bytes().decode(errors="replace"))
      except OSError:
        continue
      if any(directory in h for h in held):
        found.append(int(proc.name))
    for pid in found:
      try:
        os.kill(pid, signal.SIGKILL)
      except ProcessLookupError:
        pass
    if not found:
      return
    time.sleep(1)


def _config_file(tmp_path, idx_dir, epochs):
  path = tmp_path / f"sweep_{epochs}.py"
  path.write_text(SWEEP_CONFIG.format(repo=str(REPO), tests=str(REPO / "tests"), data=str(idx_dir), epochs=epochs))
  return path


def _sweep(env, config_path, workdir, *flags, wait=True, cwd=REPO):
  command = [sys.executable, "-m", "convnet.main", f"--config={config_path}", f"--workdir={workdir}", *flags]
  process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  if not wait:
    return process
  out, err = process.communicate(timeout=RAY_TIMEOUT)
  assert process.returncode == 0, err[-3000:]
  return out


def _results(workdir):
  return {r["name"]: r for r in files.read_jsonl(Path(workdir) / "results.jsonl")}


def _wait_for(predicate, process, seconds=RAY_TIMEOUT):
  deadline = time.time() + seconds
  while time.time() < deadline and process.poll() is None:
    found = predicate()
    if found:
      return found
    time.sleep(0.05)
  raise AssertionError(f"not seen before the sweep ended (status {process.poll()}): {process.stderr.read()[-3000:]}")


@pytest.mark.ray
@needs_ray
def test_on_a_local_ray_a_killed_worker_is_retried_and_results_equal_the_local_executor(idx_dir, tmp_path, ray_env):
  env, _ = ray_env
  config_path = _config_file(tmp_path, idx_dir, epochs=6)
  _sweep(env, config_path, tmp_path / "local")

  process = _sweep(env, config_path, tmp_path / "ray", "--config.sweep.executor.name=ray", wait=False)
  trial = tmp_path / "ray" / "trials" / NAMES[0]
  _wait_for(lambda: len(files.read_jsonl(trial / "metrics.jsonl")) >= 2, process)
  worker = int((trial / ".lock").read_text().split()[1])  # "pid N on host ..." of the Ray worker
  assert worker != process.pid
  os.kill(worker, signal.SIGKILL)
  assert len(files.read_jsonl(trial / "metrics.jsonl")) < 6  # mid-trial
  out, err = process.communicate(timeout=RAY_TIMEOUT)
  assert process.returncode == 0, err[-3000:]
  assert "sweet spot:" in out and "resuming after epoch" in err  # the retry went on from the checkpoint

  here, on_ray = _results(tmp_path / "local"), _results(tmp_path / "ray")
  lines = (tmp_path / "ray" / "results.jsonl").read_text().splitlines()
  assert sorted(json.loads(line)["name"] for line in lines) == NAMES  # each trial once
  for name in NAMES:
    assert on_ray[name]["status"] == "completed" and on_ray[name]["epoch"] == 6
    assert on_ray[name]["test_accuracy"] == here[name]["test_accuracy"]
    assert on_ray[name]["test_loss"] == pytest.approx(here[name]["test_loss"], rel=1e-6)
    assert on_ray[name]["executor"] == "ray" and on_ray[name]["node"] == socket.gethostname()
    assert 1 <= on_ray[name]["concurrent_trials"] <= 2 and here[name]["concurrent_trials"] == 1
  epochs = [m["epoch"] for m in files.read_jsonl(trial / "metrics.jsonl")]
  assert epochs == list(range(1, 7))  # resumed from its checkpoint: no epoch twice, none missing
  report = (tmp_path / "ray" / "report.md").read_text()
  assert "(ray executor)" in report
  if any(r["concurrent_trials"] > 1 for r in on_ray.values()):
    assert "were timed while other trials ran on the same node" in report


LOOPBACK_SCRIPT = """
import json
from convnet.sweep.executors import on_ray

def listening():
  found = set()
  for table in ("/proc/net/tcp", "/proc/net/tcp6"):
    for line in open(table).read().splitlines()[1:]:
      fields = line.split()
      if fields[3] == "0A":  # LISTEN
        found.add(fields[1])
  return found

before = listening()
on_ray.connect(None)
import ray
from ray._raylet import AuthenticationMode, get_authentication_mode
print(json.dumps({"node": ray.util.get_node_ip_address(), "token": get_authentication_mode() == AuthenticationMode.TOKEN,
                  "new": sorted(listening() - before)}))
"""
# 127.0.0.1, ::1 and ::ffff:127.0.0.1 as /proc/net/tcp and tcp6 write them.
LOOPBACK = {"0100007F", "00000000000000000000000001000000", "0000000000000000FFFF00000100007F"}


@pytest.mark.ray
@needs_ray
def test_a_local_ray_listens_on_loopback_only_with_token_authentication(ray_env):
  env, _ = ray_env
  env = {k: v for k, v in env.items() if k not in ("RAY_AUTH_MODE", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}
  run = subprocess.run([sys.executable, "-c", LOOPBACK_SCRIPT], env=env, cwd=REPO, capture_output=True, text=True,
                       timeout=120)  # fmt: skip
  assert run.returncode == 0, run.stderr[-3000:]
  seen = json.loads(run.stdout.strip().splitlines()[-1])
  assert seen["node"] == "127.0.0.1" and seen["token"]
  assert len(seen["new"]) >= 3  # the GCS, the raylet, its workers...
  assert {address.split(":")[0] for address in seen["new"]} <= LOOPBACK, seen["new"]


@pytest.mark.slow
def test_the_local_executor_needs_no_ray(idx_dir, tmp_path):
  config_path = _config_file(tmp_path, idx_dir, epochs=1)
  script = (
    "import runpy, sys\n"
    "sys.modules['ray'] = None  # as if Ray were not installed: import ray raises ImportError\n"
    f"sys.argv = ['convnet.main', '--config={config_path}', '--workdir={tmp_path / 'sweep'}']\n"
    "runpy.run_module('convnet.main', run_name='__main__')\n"
  )
  run = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(REPO / "src")})  # fmt: skip
  assert run.returncode == 0, run.stderr[-3000:]
  assert sorted(_results(tmp_path / "sweep")) == NAMES


@pytest.mark.ray
@needs_ray
def test_a_ray_start_cluster_runs_the_sweep_and_a_killed_driver_resumes(idx_dir, tmp_path, ray_cluster):
  env, cluster = ray_cluster
  address = f"--config.sweep.executor.ray_address={cluster}"
  config_path = _config_file(tmp_path, idx_dir, epochs=4)
  workdir = tmp_path / "sweep"

  # A relative --workdir: the driver hands its workers the absolute path (they start elsewhere).
  process = _sweep(env, config_path, "sweep", "--config.sweep.executor.name=ray", address, wait=False, cwd=tmp_path)
  _wait_for(lambda: any(len(files.read_jsonl(d / "metrics.jsonl")) >= 1 for d in (workdir / "trials").glob("*")),
            process)  # fmt: skip
  process.send_signal(signal.SIGKILL)
  process.communicate()
  assert len(_results(workdir)) < 2  # killed mid-sweep

  trained = {d.name: len(files.read_jsonl(d / "metrics.jsonl")) for d in (workdir / "trials").glob("*")}
  out = _sweep(env, config_path, "sweep", "--config.sweep.executor.name=ray", address, cwd=tmp_path)
  assert "sweet spot:" in out and (workdir / "report.md").exists()
  lines = (workdir / "results.jsonl").read_text().splitlines()
  assert sorted(json.loads(line)["name"] for line in lines) == NAMES  # every trial exactly once
  for name in NAMES:
    assert [m["epoch"] for m in files.read_jsonl(workdir / "trials" / name / "metrics.jsonl")] == [1, 2, 3, 4]
  assert max(trained.values()) >= 1  # the rerun resumed a trial that had epochs, without repeating them
  _, sessions = read_back(workdir)  # TensorBoard's HParams: one session per trial, through the kill
  assert sorted(sessions) == [f"trials/{name}" for name in NAMES]

  failed = subprocess.run(
    [sys.executable, "-m", "convnet.main", f"--config={config_path}", f"--workdir={tmp_path / 'other'}",
     "--config.sweep.executor.name=ray", f"--config.sweep.executor.ray_address=127.0.0.1:{free_port()}"],
    cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
  )  # fmt: skip
  assert failed.returncode == 1
  assert failed.stderr.strip().splitlines()[-1].startswith("error: ray_address='127.0.0.1:")
  assert "no Ray cluster answers there" in failed.stderr


def test_a_missing_ray_is_one_line(idx_dir, tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
  with pytest.raises(
    ConfigError, match=r"needs Ray, which is not installed; install it with: pip install 'convnet\[ray\]'"
  ):
    on_ray.connect("auto")


def test_a_worker_that_does_not_see_the_drivers_workdir_stops_the_sweep_with_one_line(idx_dir, tmp_path, monkeypatch):
  task = base.Task((NAMES[0],), (expand(sweep_config(idx_dir))[0].config.to_dict(),), 1.0)
  (outcome,) = base.attempt(task, str(tmp_path / "elsewhere"), expect_holder="pid 1 on head (...)")
  assert outcome["status"] == "failed" and outcome["cause"] == "unshared"
  assert not (tmp_path / "elsewhere").exists()  # nothing written where the driver is not

  def on_another_node(self, tasks, deliver):  # the driver's lock file is not what it sees
    for task in tasks:
      deliver(task, base.attempt(task, str(self.sweep_dir), expect_holder="pid 1 on head (...)"))

  monkeypatch.setattr(local.LocalExecutor, "run", on_another_node)
  with pytest.raises(ConfigError, match="must be storage that every node sees at the same path"):
    driver.run(sweep_config(idx_dir), tmp_path / "sweep")
  assert not (tmp_path / "sweep" / "results.jsonl").exists()


@pytest.mark.ray
@needs_ray
def test_a_pruned_sweep_runs_on_ray_rung_by_rung(idx_dir, tmp_path, ray_cluster):
  env, cluster = ray_cluster
  config_path = tmp_path / "pruned.py"
  config_path.write_text(
    SWEEP_CONFIG.format(repo=str(REPO), tests=str(REPO / "tests"), data=str(idx_dir), epochs=3).replace(
      '**{"sweep.axes.seeds": (0, 1)}',
      '**{"sweep.prune.method": "pareto", "sweep.prune.rungs": (1,), "sweep.prune.one_seed_margin": 1.0, '
      '"sweep.prune.keep_leaders": False, "sweep.axes.features": ((4, 4), (8, 8))}',
    )
  )
  _sweep(env, config_path, tmp_path / "ray", "--config.sweep.executor.name=ray",
         f"--config.sweep.executor.ray_address={cluster}")  # fmt: skip
  results = _results(tmp_path / "ray")
  assert len((tmp_path / "ray" / "results.jsonl").read_text().splitlines()) == len(results) == 2
  [pruned] = [r for r in results.values() if r["status"] == "pruned"]  # the slower, at the rung
  [kept] = [r for r in results.values() if r["status"] == "completed"]
  assert (pruned["epoch"], kept["epoch"], pruned["executor"]) == (1, 3, "ray") and kept["name"].startswith(
    pruned["pruned_by"] + ","
  )
  metrics = files.read_jsonl(tmp_path / "ray" / "trials" / pruned["name"] / "metrics.jsonl")
  assert [m["epoch"] for m in metrics] == [1]


@pytest.mark.ray
@needs_ray
def test_a_race_runs_on_ray_and_its_records_decide_it_again_anywhere(idx_dir, tmp_path, ray_cluster):
  """Racing (a rung, seeds added until 99.9% sure) on Ray; the same command on the local executor then works
  every decision out again from the records and trains nothing."""
  env, cluster = ray_cluster
  config_path = tmp_path / "race.py"
  config_path.write_text(
    SWEEP_CONFIG.format(repo=str(REPO), tests=str(REPO / "tests"), data=str(idx_dir), epochs=3).replace(
      '**{"sweep.axes.seeds": (0, 1)}',
      '**{"sweep.prune.method": "race", "sweep.prune.rungs": (1,), "sweep.report.confidence": 0.999, '
      '"sweep.axes.features": ((4, 4), (8, 8)), "sweep.axes.seeds": (0, 1, 2)}',
    )
  )
  workdir = tmp_path / "ray"
  _sweep(
    env, config_path, workdir, "--config.sweep.executor.name=ray", f"--config.sweep.executor.ray_address={cluster}"
  )
  lines = files.read_jsonl(workdir / "results.jsonl")
  results = _results(workdir)
  assert len(lines) == len(results) >= 4 and {r["executor"] for r in lines} == {"ray"}  # every trial once
  for r in results.values():
    epochs = [m["epoch"] for m in files.read_jsonl(workdir / "trials" / r["name"] / "metrics.jsonl")]
    assert epochs == list(range(1, (1 if r["status"] == "pruned" else 3) + 1)), r["name"]
  assert "## Racing" in (workdir / "report.md").read_text()
  process = _sweep(env, config_path, workdir, wait=False)
  _, err = process.communicate(timeout=RAY_TIMEOUT)
  assert process.returncode == 0, err[-3000:]
  assert files.read_jsonl(workdir / "results.jsonl") == lines and "nothing to train" in err
