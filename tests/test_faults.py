"""A bad day: changed configs, failed trials, two processes, corrupt files, a full disk, Ctrl-C, divergence.

Each test reproduces one way state went wrong around a run or a sweep and checks the contract: one
line naming what is wrong, nothing already written lost, every epoch and trial once.
"""

import errno
import json
import os
from pathlib import Path
import signal
import subprocess
import sys
import time

from conftest import REPO, sweep_config, tiny_config
import pytest

from convnet import idx, train
from convnet.errors import ConfigError, DataError, LockError, StorageError, TrainingError
from convnet.results import analysis
from convnet.rundir import files, locks, runlog
from convnet.sweep import driver, store

pytestmark = pytest.mark.slow


def cli(*args, cwd=REPO, timeout=300):
  env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
  return subprocess.run(
    [sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
  )


def one_error_line(result) -> str:
  lines = [line for line in result.stderr.splitlines() if line.strip() and line[:1] not in "IW"]
  assert "Traceback" not in result.stderr, result.stderr
  assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
  return lines[0]


def lines_of(workdir) -> list[dict]:
  return files.read_jsonl(Path(workdir) / "results.jsonl")


# 1. A sweep workdir refuses a result-changing config, and takes new axis values and harmless changes.
def test_a_sweep_refuses_a_result_changing_config_but_can_be_extended(idx_dir, tmp_path):
  driver.run(sweep_config(idx_dir), tmp_path)
  before = (tmp_path / "results.jsonl").read_text()
  for field, value, message in (
    ("learning_rate", 0.01, "learning_rate: 0.001 there, 0.01 now"),
    ("num_epochs", 3, "num_epochs: 1 there, 3 now"),
  ):
    with pytest.raises(ConfigError, match=f"{tmp_path} holds a sweep with a different config \\({message}\\)"):
      driver.run(sweep_config(idx_dir, **{field: value}), tmp_path)
  assert (tmp_path / "results.jsonl").read_text() == before
  assert json.loads((tmp_path / "config.json").read_text())["learning_rate"] == 0.001  # not overwritten
  extended = sweep_config(
    idx_dir, **{"sweep.axes.seeds": (0, 1), "steps_per_call": 3, "sweep.report.rule": "within_tolerance"}
  )
  done = driver.run(extended, tmp_path)
  assert [r["name"] for r in lines_of(tmp_path)] == [
    "features=4-4,kernel_size=3,seed=0",
    "features=4-4,kernel_size=3,seed=1",
  ]
  assert len(done.results) == 2


# 2. Failed trials: retried when the cause was outside them; their own failures only when asked.
def test_failed_trials_are_retried_by_cause_and_the_record_keeps_the_history(idx_dir, tmp_path):
  data = tmp_path / "data"
  data.mkdir()
  for f in idx_dir.iterdir():
    (data / f.name).write_bytes(f.read_bytes())
  good_labels = (data / "t10k-labels-idx1-ubyte.gz").read_bytes()
  (data / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")  # the test labels, broken
  config = sweep_config(data, optimizer="sgd", momentum=0.0, **{"sweep.axes.learning_rate": (1e-3, 1e12)})
  config.sweep.axes.features = ((4, 4), (4,) * 5)
  work = tmp_path / "sweep"
  driver.run(config, work)
  first = {r["name"]: r for r in lines_of(work)}
  assert {r["status"] for r in first.values()} == {"failed", "skipped"}
  assert {r.get("cause") for r in first.values() if r["status"] == "failed"} == {"environment"}

  (data / "t10k-labels-idx1-ubyte.gz").write_bytes(good_labels)  # the data fixed
  driver.run(config, work)
  second = store.read_results(work)
  by_name = {r["name"]: r for r in second}
  ok, nan = (
    "features=4-4,kernel_size=3,learning_rate=0.001,seed=0",
    "features=4-4,kernel_size=3,learning_rate=1000000000000.0,seed=0",
  )
  assert by_name[ok]["status"] == "completed"
  assert by_name[nan]["status"] == "failed" and by_name[nan]["cause"] == "training"
  assert len(lines_of(work)) == 6  # 2 skipped + 2 failed, then the 2 retried: the history is kept

  driver.run(config, work)  # nothing to do: its own failure stays failed, the skipped stay skipped
  assert len(lines_of(work)) == 6
  config.sweep.retry_failed = True
  driver.run(config, work)
  assert len(lines_of(work)) == 7 and lines_of(work)[-1]["name"] == nan


LONG_RUN = ["convnet.main", "--config=configs/default.py", "--config.num_epochs=400", "--config.model.features=(4,4)",
            "--config.model.dense_features=(8,)", "--config.steps_per_call=0", "--config.progress=False",
            "--config.tensorboard=False"]  # fmt: skip


def start(args, cwd=REPO):
  env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
  return subprocess.Popen([sys.executable, "-m", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)  # fmt: skip


def wait_for_epochs(workdir: Path, count: int, process, timeout=240):
  deadline = time.time() + timeout
  while time.time() < deadline and len(files.read_jsonl(workdir / "metrics.jsonl")) < count:
    assert process.poll() is None, process.stderr.read()
    time.sleep(0.05)
  assert len(files.read_jsonl(workdir / "metrics.jsonl")) >= count


# 3. One process per workdir: the second gets one line naming the holder; a kill -9 leaves no stale lock.
def test_a_second_process_on_a_workdir_gets_one_line_and_a_killed_holder_leaves_no_lock(idx_dir, tmp_path):
  work = tmp_path / "run"
  first = start([*LONG_RUN, f"--workdir={work}", f"--config.dataset.dir={idx_dir}"])
  try:
    wait_for_epochs(work, 1, first)
    second = cli(*LONG_RUN, f"--workdir={work}", f"--config.dataset.dir={idx_dir}")
    assert second.returncode == 1
    line = one_error_line(second)
    assert line.startswith(f"error: {work} is in use by pid {first.pid} on ") and "main.py" in line
    with pytest.raises(LockError, match=f"in use by pid {first.pid}"):
      with locks.hold(work):
        pass
  finally:
    first.send_signal(signal.SIGKILL)
    first.wait()
  with locks.hold(work):  # the kernel released it with the process
    assert (work / ".lock").read_text().startswith(f"pid {os.getpid()} ")


# 4. A corrupt newest checkpoint: the previous one is used, with a warning; none left: one line.
def test_a_corrupt_checkpoint_falls_back_to_the_previous_one(idx_dir, tmp_path, caplog):
  config = tiny_config(idx_dir, num_epochs=2, tensorboard=False)
  train.train_and_evaluate(config, str(tmp_path))
  newest = tmp_path / "checkpoints" / "2"
  biggest = max((p for p in newest.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
  biggest.write_bytes(biggest.read_bytes()[: biggest.stat().st_size // 2])  # truncated after the fact
  (tmp_path / "summary.json").unlink()  # as if killed right after the checkpoint
  with caplog.at_level("WARNING", logger="convnet"):
    summary = train.train_and_evaluate(tiny_config(idx_dir, num_epochs=3, tensorboard=False), str(tmp_path))
  assert "skipped checkpoint(s) that do not restore" in caplog.text and str(newest) in caplog.text
  assert [m["epoch"] for m in files.read_jsonl(tmp_path / "metrics.jsonl")] == [1, 2, 3] and summary["epoch"] == 3

  for epoch_dir in (tmp_path / "checkpoints").iterdir():
    for f in epoch_dir.rglob("*"):
      if f.is_file() and f.stat().st_size > 100:
        f.write_bytes(b"garbage")
  (tmp_path / "summary.json").unlink()
  with pytest.raises(DataError, match=r"cannot restore .*checkpoints/3 .*, nor the older .*checkpoints/2"):
    train.train_and_evaluate(tiny_config(idx_dir, num_epochs=4, tensorboard=False), str(tmp_path))


# 5. Corrupt state files: one line naming the file (and line); a corrupt results line re-runs its trial.
def test_corrupt_state_files_are_named_and_a_corrupt_result_line_reruns_its_trial(idx_dir, tmp_path, caplog):
  run_dir = tmp_path / "run"
  train.train_and_evaluate(tiny_config(idx_dir, tensorboard=False), str(run_dir))
  metrics = (run_dir / "metrics.jsonl").read_text().splitlines(keepends=True)
  (run_dir / "metrics.jsonl").write_text(metrics[0][:20] + "#\n" + metrics[1])
  (run_dir / "summary.json").unlink()
  with pytest.raises(DataError, match=r"metrics.jsonl:1: corrupt line"):
    train.train_and_evaluate(tiny_config(idx_dir, tensorboard=False), str(run_dir))
  for name in ("config.json", "summary.json"):
    broken = tmp_path / name
    broken.write_text("{not json")
    with pytest.raises(DataError, match=f"{broken}: corrupt, not JSON"):
      files.read_json(broken)

  work = tmp_path / "sweep"
  config = sweep_config(idx_dir, **{"sweep.axes.seeds": (0, 1, 2)})
  driver.run(config, work)
  lines = (work / "results.jsonl").read_text().splitlines(keepends=True)
  (work / "results.jsonl").write_text(lines[0] + '{"name": "features=4-4,kern' + "\n" + lines[2])
  result = cli("convnet.report", f"--workdir={work}")
  assert result.returncode == 0 and "results.jsonl:2: corrupt line" in result.stderr
  with caplog.at_level("WARNING", logger="convnet"):
    driver.run(config, work)
  assert "results.jsonl:2: corrupt line" in caplog.text
  assert sorted(r["name"] for r in store.read_results(work)) == [
    f"features=4-4,kernel_size=3,seed={s}" for s in range(3)
  ]


# 6. A full disk stops the sweep with its records intact; a re-run resumes. A file as --workdir: one line.
def test_a_full_disk_stops_the_sweep_with_its_records_intact(idx_dir, tmp_path, monkeypatch):
  config = sweep_config(idx_dir, **{"sweep.axes.seeds": (0, 1, 2)})
  real_append = files.append_jsonl
  calls = {"metrics": 0}

  def full_after_one_trial(path, record):
    if Path(path).name == "metrics.jsonl":
      calls["metrics"] += 1
      if calls["metrics"] > 1:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    real_append(path, record)

  monkeypatch.setattr(files, "append_jsonl", full_after_one_trial)
  with pytest.raises(StorageError, match=r"trial features=4-4,kernel_size=3,seed=1: .*metrics.jsonl: No space left"):
    driver.run(config, tmp_path)
  assert [r["name"] for r in lines_of(tmp_path)] == ["features=4-4,kernel_size=3,seed=0"]
  monkeypatch.setattr(files, "append_jsonl", real_append)
  driver.run(config, tmp_path)
  assert [r["status"] for r in lines_of(tmp_path)] == ["completed"] * 3

  a_file = tmp_path / "not_a_dir"
  a_file.write_text("x")
  result = cli("convnet.main", "--config=configs/default.py", f"--workdir={a_file}")
  assert result.returncode == 1
  assert (
    one_error_line(result) == f"error: --workdir={a_file} is a file, not a directory; give a directory (new or a run's)"
  )


def test_an_os_error_from_deep_inside_a_command_is_one_line(tmp_path):
  script = tmp_path / "full.py"
  script.write_text(
    "import errno\nfrom convnet import cli\n"
    "def main(values):\n  raise RuntimeError('orbax: ' + str(OSError(errno.ENOSPC, 'No space left on device')))\n"
    "cli.run(main)\n"
  )
  env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
  result = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
  assert result.returncode == 1 and "No space left on device" in one_error_line(result)


# 7. Ctrl-C: one line, exit status 130, and the same command resumes.
def test_ctrl_c_prints_one_line_and_the_run_resumes(idx_dir, tmp_path):
  args = [
    *LONG_RUN[:2],
    "--config.num_epochs=60",
    *LONG_RUN[3:],
    f"--workdir={tmp_path}",
    f"--config.dataset.dir={idx_dir}",
  ]
  process = start(args)
  wait_for_epochs(tmp_path, 2, process)
  process.send_signal(signal.SIGINT)
  _, stderr = process.communicate(timeout=120)
  assert process.returncode == 130, stderr
  result = subprocess.CompletedProcess(args, 130, "", stderr)
  line = one_error_line(result)
  assert line.startswith("error: interrupted after epoch ") and line.endswith("re-run the same command to resume")
  rerun = cli(*args)
  assert rerun.returncode == 0, rerun.stderr
  assert [m["epoch"] for m in files.read_jsonl(tmp_path / "metrics.jsonl")] == list(range(1, 61))


# 8. TensorBoard shows every epoch of metrics.jsonl once after a resume, whatever a kill left in its events.
def test_tensorboard_shows_every_epoch_once_after_resume(idx_dir, tmp_path):
  from tensorboard.backend.event_processing import event_accumulator

  train.train_and_evaluate(tiny_config(idx_dir, num_epochs=2), str(tmp_path))
  events_dir = tmp_path / "tensorboard"
  for f in events_dir.iterdir():
    f.unlink()  # killed before the events of epochs 1-2 were flushed (the worst case)
  stray = runlog.RunLog(tmp_path)
  stray._add_scalars({"epoch": 1, "test_accuracy": 0.5})  # and an epoch-1 event besides
  stray.close()
  (tmp_path / "summary.json").unlink()
  train.train_and_evaluate(tiny_config(idx_dir, num_epochs=3), str(tmp_path))
  accumulator = event_accumulator.EventAccumulator(str(events_dir))
  accumulator.Reload()
  steps = [e.step for e in accumulator.Scalars("test_accuracy")]
  metrics = files.read_jsonl(tmp_path / "metrics.jsonl")
  assert steps == [m["epoch"] for m in metrics] == [1, 2, 3]
  assert [e.value for e in accumulator.Scalars("test_accuracy")] == pytest.approx([m["test_accuracy"] for m in metrics])


# 9. Divergence is failure, and no sweet spot is named among trials at chance.
def test_a_diverged_run_fails_and_chance_is_never_the_sweet_spot(idx_dir, tmp_path):
  with pytest.raises(TrainingError, match=r"training diverged: loss .* > 23\.0 \(10 x ln 10 classes\) in epoch 1"):
    train.train_and_evaluate(tiny_config(idx_dir, learning_rate=1e6), str(tmp_path))
  assert json.loads((tmp_path / "summary.json").read_text())["status"] == "failed"

  def row(name, accuracy, seconds):
    return analysis.ConfigResult(name, (name,), (0, 1), accuracy, 0.0, seconds, 0.0, 1.0, 1, 1, 1, num_classes=10)

  fast_at_chance, slow_good = row("a", 0.19, 1.0), row("b", 0.90, 9.0)
  assert analysis.sweet_spot([fast_at_chance, slow_good])[0] is slow_good
  with pytest.raises(DataError, match="every configuration's accuracy is at chance"):
    analysis.sweet_spot([fast_at_chance])


# 10. The smaller ones.
def test_padding_is_normalised_so_same_and_SAME_are_one_run(idx_dir, tmp_path):
  train.train_and_evaluate(tiny_config(idx_dir, num_epochs=1, **{"model.padding": "same"}), str(tmp_path))
  again = train.train_and_evaluate(tiny_config(idx_dir, num_epochs=1, **{"model.padding": "SAME"}), str(tmp_path))
  assert again["status"] == "completed"


def test_idx_classes_come_from_the_labels_and_too_many_examples_is_one_line(tmp_path):
  from conftest import make_images

  from convnet import input_pipeline

  for split, num in (("train", 60), ("t10k", 20)):
    images, labels = make_images(num, num_classes=5)
    idx.write_idx(tmp_path / f"{split}-images-idx3-ubyte", images)
    idx.write_idx(tmp_path / f"{split}-labels-idx1-ubyte", labels)
  data = input_pipeline.get_datasets({"dir": str(tmp_path), "name": "fashion_mnist"})
  assert data.num_classes == 5 and data.class_names == ("0", "1", "2", "3", "4")  # the 10 names do not fit
  assert input_pipeline.peek_shape({"dir": str(tmp_path), "name": "fashion_mnist"}) == ((28, 28, 1), 5)
  with pytest.raises(ConfigError, match=r"dataset.num_train_examples=100 is not allowed; .* has 60 of them: use 1..60"):
    input_pipeline.get_datasets({"dir": str(tmp_path), "num_train_examples": 100})


def test_tfds_that_is_not_prepared_and_cannot_download_says_so(tmp_path, monkeypatch):
  import tensorflow_datasets as tfds

  from convnet import input_pipeline

  def offline(*args, **kwargs):
    raise ModuleNotFoundError("No module named 'importlib_resources'")  # what an offline download reported

  monkeypatch.setattr(tfds, "data_source", offline)
  with pytest.raises(DataError, match=r"TFDS dataset 'mnist' is not prepared in .* and could not be downloaded here"):
    input_pipeline.load_tfds("mnist", str(tmp_path))


def test_a_run_stopped_by_stop_at_resumes_when_stop_at_no_longer_stops_it(idx_dir, tmp_path):
  stopped = train.train_and_evaluate(tiny_config(idx_dir, stop_at=0.2, num_epochs=6, learning_rate=3e-3), str(tmp_path))
  assert stopped["stopped_early"] and stopped["epoch"] < 6
  again = train.train_and_evaluate(tiny_config(idx_dir, stop_at=0.2, num_epochs=6, learning_rate=3e-3), str(tmp_path))
  assert again == stopped  # still stopped by the same stop_at: finished
  resumed = train.train_and_evaluate(tiny_config(idx_dir, num_epochs=6, learning_rate=3e-3), str(tmp_path))
  assert resumed["epoch"] == 6 and not resumed["stopped_early"]
  assert [m["epoch"] for m in files.read_jsonl(tmp_path / "metrics.jsonl")] == list(range(1, 7))
