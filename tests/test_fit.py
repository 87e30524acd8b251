"""One training loop (train.fit) for a run and for seeds trained together: the same fallback and Ctrl-C."""

import os
from pathlib import Path
import signal
import subprocess
import sys
import time

from conftest import REPO, tiny_config
import pytest

from convnet import train
from convnet.rundir import files

pytestmark = pytest.mark.slow

MODES = pytest.mark.parametrize("together", [False, True], ids=["apart", "seeds_together"])


def fit(configs, dirs, together):
  if together:
    return train.fit(configs, dirs)
  return [train.fit([config], [workdir])[0] for config, workdir in zip(configs, dirs, strict=True)]


@MODES
def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(idx_dir, tmp_path, caplog, together):
  configs = [tiny_config(idx_dir, seed=seed, tensorboard=False).to_dict() for seed in (0, 1)]
  dirs = [str(tmp_path / f"seed{seed}") for seed in (0, 1)]
  first = fit(configs, dirs, together)
  before = [files.read_jsonl(Path(d) / "metrics.jsonl") for d in dirs]
  newest = Path(dirs[1]) / "checkpoints" / "2"
  biggest = max((p for p in newest.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
  biggest.write_bytes(biggest.read_bytes()[: biggest.stat().st_size // 2])  # truncated after the fact
  for d in dirs:
    (Path(d) / "summary.json").unlink()  # as if killed right after the checkpoints
  with caplog.at_level("WARNING", logger="convnet"):
    again = fit([{**c, "num_epochs": 3} for c in configs], dirs, together)
  assert "skipped checkpoint(s) that do not restore" in caplog.text and str(newest) in caplog.text
  assert [s["status"] for s in again] == ["completed", "completed"] and [s["epoch"] for s in again] == [3, 3]
  for d, old, summary in zip(dirs, before, first, strict=True):
    epochs = files.read_jsonl(Path(d) / "metrics.jsonl")
    assert [m["epoch"] for m in epochs] == [1, 2, 3]  # every epoch once
    assert epochs[1]["test_loss"] == pytest.approx(old[1]["test_loss"], rel=1e-5)  # epoch 2 trained again: the same
    assert summary["epoch"] == 2
  assert (Path(dirs[1]) / "damaged_checkpoints").is_dir()


def sweep_args(workdir, idx_dir, together):
  return ["convnet.main", "--config=configs/sweep.py", f"--workdir={workdir}", f"--config.dataset.dir={idx_dir}",
          "--config.num_epochs=12", "--config.sweep.axes.features=((4,4),)", "--config.sweep.axes.kernel_size=(3,)",
          "--config.sweep.axes.seeds=(0,1)", f"--config.sweep.seeds_together={together}", "--config.model.dense_features=(8,)",
          "--config.steps_per_call=0", "--config.tensorboard=False", "--config.batch_size=16",
          "--config.dataset.validation_size=60", "--config.sweep.prune.method=None", "--config.inference.seconds=0"]  # fmt: skip


def interrupted(args, env, metrics) -> str:
  """Starts ``python -m *args``, sends Ctrl-C once every file of ``metrics`` has two epochs recorded, and returns
  the one error line it ends with (exit status 130, no traceback)."""
  process = subprocess.Popen([sys.executable, "-m", *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
  deadline = time.time() + 240
  while time.time() < deadline and min(len(files.read_jsonl(m)) for m in metrics) < 2:
    assert process.poll() is None, process.stderr.read()
    time.sleep(0.02)
  process.send_signal(signal.SIGINT)
  _, stderr = process.communicate(timeout=120)
  assert process.returncode == 130, stderr
  lines = [line for line in stderr.splitlines() if line.startswith("error:") or "Traceback" in line]
  assert len(lines) == 1 and lines[0].startswith("error: interrupted"), stderr
  assert lines[0].endswith("re-run the same command to resume")
  return lines[0]


@pytest.mark.slow
def test_ctrl_c_in_a_side_by_side_sweep_stops_every_trial_at_a_safe_point_and_resumes(idx_dir, tmp_path):
  """Two trials training at once, each on its own (forced CPU) device: one Ctrl-C ends both, with one line."""
  args = [*sweep_args(tmp_path, idx_dir, False), "--config.sweep.executor.side_by_side=2", "--config.num_devices=1"]
  env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  trials = [tmp_path / "trials" / f"features=4-4,kernel_size=3,seed={seed}" for seed in (0, 1)]
  interrupted(args, env, [t / "metrics.jsonl" for t in trials])
  for trial in trials:  # each stopped after a whole epoch: its records are contiguous, none of them torn
    epochs = [m["epoch"] for m in files.read_jsonl(trial / "metrics.jsonl")]
    assert 2 <= len(epochs) < 12 and epochs == list(range(1, len(epochs) + 1))
  assert not (tmp_path / "results.jsonl").exists() or not files.read_jsonl(tmp_path / "results.jsonl")
  rerun = subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert rerun.returncode == 0, rerun.stderr
  for trial in trials:
    assert [m["epoch"] for m in files.read_jsonl(trial / "metrics.jsonl")] == list(range(1, 13))
  results = files.read_jsonl(tmp_path / "results.jsonl")
  assert sorted(r["status"] for r in results) == ["completed", "completed"]
  assert max(r["concurrent_trials"] for r in results) == 2


@MODES
def test_ctrl_c_in_a_sweep_stops_at_a_safe_point_with_one_line_and_resumes(idx_dir, tmp_path, together):
  args = sweep_args(tmp_path, idx_dir, together)
  env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
  metrics = tmp_path / "trials" / "features=4-4,kernel_size=3,seed=0" / "metrics.jsonl"
  line = interrupted(args, env, [metrics])
  assert line.startswith("error: interrupted after epoch "), line
  stopped_at = int(line.split("interrupted after epoch ")[1].split()[0])
  assert stopped_at >= 1 and [m["epoch"] for m in files.read_jsonl(metrics)] == list(range(1, stopped_at + 1))
  rerun = subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert rerun.returncode == 0, rerun.stderr
  for seed in (0, 1):
    trial = tmp_path / "trials" / f"features=4-4,kernel_size=3,seed={seed}"
    assert [m["epoch"] for m in files.read_jsonl(trial / "metrics.jsonl")] == list(range(1, 13))
  results = files.read_jsonl(tmp_path / "results.jsonl")
  assert sorted(r["status"] for r in results) == ["completed", "completed"]
