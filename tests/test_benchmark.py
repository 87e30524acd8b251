"""The benchmark runs and prints its table (speed is measured by running it, never asserted here)."""

import os
import subprocess
import sys

from conftest import REPO
import pytest

pytestmark = pytest.mark.slow


def test_peers_mode_runs_alternating_epochs_and_skips_missing_peers(idx_dir):
  env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
  result = subprocess.run(
    [sys.executable, "-m", "convnet.benchmark", "--impls=convnet,pytorch,keras", "--epochs=2", f"--data_dir={idx_dir}"],
    cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
  )  # fmt: skip
  assert result.returncode == 0, result.stderr
  out = result.stdout
  assert "epoch 1 convnet" in out and "epoch 2 convnet" in out
  assert "GFLOP/s" in out and "convnet compile:" in out
  for peer, module in (("pytorch", "torch"), ("keras", "tensorflow")):
    # Each peer either ran alongside convnet or was skipped with a note; nothing in between.
    assert (f"epoch 2 {peer}" in out) != (f"note: {peer} skipped: {module} is not installed" in out)


def test_grid_mode_times_each_configuration_of_a_grid(idx_dir, tmp_path):
  grid = tmp_path / "grid.py"  # two configurations of the smoke grid: enough to see every column
  grid.write_text(
    "from convnet import configuration\n\n"
    "def get_config():\n"
    "  config = configuration.load_config('configs/sweep.py:smoke')\n"
    "  config.sweep.axes.kernel_size = (3,)\n"
    "  return config\n"
  )
  env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
  result = subprocess.run(
      [sys.executable, "-m", "convnet.benchmark", "--mode=grid", f"--grid={grid}", "--steps=3", "--repeats=1",
       f"--data_dir={idx_dir}"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
  )  # fmt: skip
  assert result.returncode == 0, result.stderr[-3000:]
  rows = [line for line in result.stdout.splitlines() if line.startswith("features=")]
  assert [row.split()[0] for row in rows] == ["features=8-8,kernel_size=3", "features=16-16,kernel_size=3"]
  assert all("convnet" in row and "unfused first layer" in row and "flax layers" in row for row in rows)
