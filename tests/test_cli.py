"""The command lines: overrides reach the run; bad values end with one line and exit status 1."""

import json
import os
from pathlib import Path
import subprocess
import sys

import pytest

REPO = Path(__file__).resolve().parents[1]


def run(*args, timeout=300):
  env = {**os.environ, "PYTHONPATH": str(REPO)}
  return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def error_line(result):
  """The one 'error:' line, checked to be the last line of stderr, with no traceback before it."""
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  assert "Traceback" not in result.stderr, result.stderr
  assert [line for line in lines if line.startswith("error:")] == lines[-1:], result.stderr
  return lines[-1]


def test_main_trains_with_command_line_overrides(idx_dir, tmp_path):
  result = run(
      "-m", "convnet.main", "--config=configs/default.py", f"--workdir={tmp_path}", "--config.num_epochs=1",
      f"--config.dataset.dir={idx_dir}", "--config.model.features=(4,4)", "--config.model.kernel_size=(5,3)",
      "--config.model.dense_features=(8,)", "--config.progress=False",
  )  # fmt: skip
  assert result.returncode == 0, result.stderr
  config = json.loads((tmp_path / "config.json").read_text())
  assert (
    config["model"]["features"] == [4, 4] and config["model"]["kernel_size"] == [5, 3] and config["num_epochs"] == 1
  )
  assert json.loads((tmp_path / "summary.json").read_text())["status"] == "completed"


@pytest.mark.parametrize(
  "override, message",
  [
    ("--config.num_epochs=0", "error: num_epochs=0 is not allowed; use an int >= 1"),
    ("--config.model.features=(-8,8)", "error: model.features=(-8, 8) is not allowed"),
    ("--config.model.kernel_size=29", "error: conv0: a 29x29 kernel does not fit its 28x28 input"),
    ("--config.model.fetures=(8,8)", "error: --config.model.fetures=(8,8): no such config field"),
    ("--config.batch_size=big", "error: flag --config.batch_size=big"),
    ("--config.dataset.dir=/nonexistent/fmnist", "error: /nonexistent/fmnist: IDX directory not found"),
  ],
)
def test_bad_values_give_one_line_and_exit_status_1(idx_dir, tmp_path, override, message):
  args = ["-m", "convnet.main", "--config=configs/default.py", f"--workdir={tmp_path}"]
  if "dataset.dir" not in override:
    args.append(f"--config.dataset.dir={idx_dir}")
  result = run(*args, override)
  assert result.returncode == 1
  assert error_line(result).startswith(message)


def test_corrupt_data_file_gives_one_line(idx_dir, tmp_path):
  broken = tmp_path / "data"
  broken.mkdir()
  for f in idx_dir.iterdir():
    (broken / f.name).write_bytes(f.read_bytes())
  (broken / "train-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
  result = run(
    "-m", "convnet.main", "--config=configs/default.py", f"--workdir={tmp_path / 'w'}", f"--config.dataset.dir={broken}"
  )
  assert result.returncode == 1
  assert error_line(result).startswith(f"error: {broken}/train-labels-idx1-ubyte.gz: corrupt or truncated gzip data")


def test_summary_prints_the_keras_like_table():
  result = run("-m", "convnet.summary", "--config=configs/default.py")
  assert result.returncode == 0, result.stderr
  for text in (
    "conv0 (Conv2D)",
    "(None, 26, 26, 64)",
    "640",
    "36,928",
    "204,928",
    "1,290",
    "Total params: 243,786",
    "8,921,088",
  ):
    assert text in result.stdout
