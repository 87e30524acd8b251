"""A disk that fills up, for real (a tmpfs of a few hundred KiB): one error line naming the file, whatever
layer the disk fills in (an orbax checkpoint's writer threads, the report's files), and no traceback."""

import os
import subprocess
import sys

from conftest import REPO
import pytest

from convnet.rundir import files

pytestmark = pytest.mark.slow


@pytest.fixture
def small_disk(tmp_path):
  """A 700 KiB tmpfs (root only: skipped where mounting is not allowed)."""
  disk = tmp_path / "disk"
  disk.mkdir()
  mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=700k", "tmpfs", str(disk)], capture_output=True)
  if mounted.returncode != 0:
    pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
  yield disk
  subprocess.run(["umount", str(disk)], check=True)


def command(*args, cwd=REPO):
  env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
  return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def the_error_line(result) -> str:
  assert result.returncode == 1, result.stderr
  assert "Traceback" not in result.stderr, result.stderr
  lines = [line for line in result.stderr.splitlines() if line.strip() and line[:1] not in "IW"]
  assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
  return lines[0]


def test_a_checkpoint_save_on_a_full_disk_is_one_line_naming_it(idx_dir, small_disk):
  # The seed network's checkpoint (its Adam state too: ~2.9 MB) cannot fit: orbax's writer threads fail.
  result = command("convnet.main", "--config=configs/default.py", f"--workdir={small_disk / 'run'}",
                   f"--config.dataset.dir={idx_dir}", "--config.num_epochs=2", "--config.tensorboard=False")  # fmt: skip
  line = the_error_line(result)
  assert f"{small_disk / 'run' / 'checkpoints' / '1'}: cannot save the checkpoint" in line
  assert "free some space and re-run the same command" in line
  assert [m["epoch"] for m in files.read_jsonl(small_disk / "run" / "metrics.jsonl")] == [1]  # kept


def test_the_report_on_a_full_disk_is_one_line_naming_the_file(small_disk):
  sweep = small_disk / "sweep"
  files.write_json(sweep / "config.json", {"num_epochs": 1})
  record = {"name": "a=1,seed=0", "overrides": {"a": 1}, "seed": 0, "status": "completed", "test_accuracy": 0.5,
            "epoch_seconds": 1.0, "examples_per_second": 1.0, "num_params": 1, "flops_per_example": 1, "epoch": 1}  # fmt: skip
  files.append_jsonl(sweep / "results.jsonl", record)
  (sweep / ".lock").write_text("pid 1 on nowhere (a previous holder)\n" + " " * 200)
  with open(small_disk / "filler", "wb", buffering=0) as f:  # the rest of the disk
    try:
      while True:
        f.write(b"\0" * 4096)
    except OSError:
      pass
  line = the_error_line(command("convnet.report", f"--workdir={sweep}"))
  assert f"{sweep}/" in line and "No space left on device" in line
  assert files.read_jsonl(sweep / "results.jsonl") == [record]  # nothing already written is lost


def test_what_a_failed_save_leaves_behind_is_not_printed():
  """Seen in CI once: asyncio logs a failed orbax write's task when it is collected, after the error line."""
  import logging

  from convnet import cli

  def record(message):
    return logging.LogRecord("asyncio", logging.ERROR, "base_events.py", 1771, message, None, None)

  leftover = "Task exception was never retrieved\nfuture: <Task finished coro=<write() defined at /x/orbax/ser.py:1>>"
  assert not cli._orbax_leftovers(record(leftover))
  assert cli._orbax_leftovers(record("Task exception was never retrieved\nfuture: <Task finished coro=<mine()>>"))
  assert cli._orbax_leftovers(record("Executing <Task ...> took 2.1 seconds"))
