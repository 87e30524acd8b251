"""The command lines: overrides reach the run; bad values end with one line and exit status 1."""

import json
import os
from pathlib import Path
import shutil
import subprocess
import sys

import pytest

from convnet import configuration

REPO = Path(__file__).resolve().parents[1]


def run(*args, timeout=300):
  env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
  return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def error_line(result):
  """The one 'error:' line, checked to be the last line of stderr, with no traceback before it."""
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  assert "Traceback" not in result.stderr, result.stderr
  assert [line for line in lines if line.startswith("error:")] == lines[-1:], result.stderr
  return lines[-1]


@pytest.mark.slow
def test_main_trains_with_command_line_overrides(idx_dir, tmp_path):
  result = run(
      "-m", "convnet.main", "--config=configs/default.py", f"--workdir={tmp_path}", "--config.num_epochs=1",
      f"--config.dataset.dir={idx_dir}", "--config.model.features=(4,4)", "--config.model.kernel_size=(5,3)",
      "--config.model.dense_features=(8,)", "--config.progress=False", "--config.inference.seconds=0",
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
  result = run("-m", "convnet.model_table", "--config=configs/default.py")
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


def run_in(cwd, *args, timeout=300):
  env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
  return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_every_convnet_field_is_a_config_field_and_settable_from_the_command_line(idx_dir):
  import dataclasses

  from convnet import cli, main, models

  fields = {f.name for f in dataclasses.fields(models.ConvNet)} - {"parent", "name"}
  config = configuration.load_config("configs/default.py")
  assert set(config.model) == fields
  argv = ["main", "--config=configs/default.py", "--workdir=w", "--config.model.dtype=bfloat16",
          "--config.model.fuse_max_channels=0", "--config.model.crop_to_pool=False", "--config.model.num_classes=10"]  # fmt: skip
  model = cli.parse(argv, main.define_flags).config.model
  assert (model.dtype, model.fuse_max_channels, model.crop_to_pool, model.num_classes) == ("bfloat16", 0, False, 10)


def test_a_sweep_axis_given_as_one_value_gets_one_line_with_the_tuple_hint(tmp_path):
  result = run("-m", "convnet.main", "--config=configs/sweep.py:smoke", f"--workdir={tmp_path}",
               "--config.sweep.axes.features=(32,32)")  # fmt: skip
  assert result.returncode == 1
  line = error_line(result)
  assert "sweep.axes.features=(32, 32)" in line and "sweep axes are tuples of values" in line and "'((32,32),)'" in line


def test_configs_load_from_any_directory_and_a_missing_one_gets_one_line(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # a script in another directory
  assert configuration.load_config("configs/default.py").model.features == (64, 64)
  assert len(configuration.load_config("configs/sweep.py:depth").sweep.axes.features) == 3
  result = run_in(tmp_path, "-m", "convnet.model_table", "--config=configs/default.py")
  assert result.returncode == 0 and "Total params: 243,786" in result.stdout, result.stderr
  result = run_in(tmp_path, "-m", "convnet.model_table", "--config=configs/nothing.py")
  assert result.returncode == 1
  assert error_line(result).startswith("error: configs/nothing.py: config file not found")
  assert "configs/default.py, configs/sweep.py" in error_line(result)


def test_an_unknown_variant_gets_its_whole_reason():
  result = run("-m", "convnet.model_table", "--config=configs/sweep.py:smok")
  assert result.returncode == 1
  assert error_line(result).endswith(
    "configs/sweep.py has no variant 'smok'; use configs/sweep.py, :smoke, :depth or :wide"
  ), result.stderr


def test_a_positional_argument_gets_one_line_and_help_works(tmp_path):
  result = run("-m", "convnet.report", str(tmp_path))
  assert result.returncode == 1
  assert error_line(result).startswith(f"error: unexpected argument '{tmp_path}': this command takes flags only")
  result = run("-m", "convnet.report", "--help")
  assert result.returncode == 0 and "--workdir" in result.stdout + result.stderr


@pytest.mark.install
def test_an_installed_wheel_runs_from_another_directory_with_its_shipped_configs(tmp_path):
  source = tmp_path / "source"  # a copy, so that the build leaves nothing in the repository
  for name in ("src", "configs"):  # src/convnet/configs stays a symlink to configs/, as in a clone
    shutil.copytree(
      REPO / name, source / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
  for name in ("pyproject.toml", "README.md"):
    shutil.copy(REPO / name, source / name)
  built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "wheel"),
                          str(source)], capture_output=True, text=True)  # fmt: skip
  assert built.returncode == 0, built.stderr
  site = tmp_path / "site"
  installed = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
                              *map(str, (tmp_path / "wheel").glob("*.whl"))], capture_output=True, text=True)  # fmt: skip
  assert installed.returncode == 0, installed.stderr
  assert (site / "convnet" / "configs" / "default.py").is_file() and (
    site / "convnet" / "configs" / "sweep.py"
  ).is_file()
  env = {**os.environ, "PYTHONPATH": str(site)}
  where = subprocess.run([sys.executable, "-c", "import convnet; print(convnet.__file__)"], cwd=tmp_path, env=env,
                         capture_output=True, text=True)  # fmt: skip
  assert where.stdout.strip() == str(site / "convnet" / "__init__.py")
  result = subprocess.run([sys.executable, "-m", "convnet.model_table", "--config=configs/sweep.py:depth"], cwd=tmp_path,
                          env=env, capture_output=True, text=True)  # fmt: skip
  assert result.returncode == 0 and "Total params: 243,786" in result.stdout, result.stderr


@pytest.mark.slow
def test_a_run_and_a_sweep_end_by_saying_what_they_found_and_where(idx_dir, tmp_path):
  small = [f"--config.dataset.dir={idx_dir}", "--config.num_epochs=1", "--config.model.dense_features=(8,)",
           "--config.inference.seconds=0"]  # fmt: skip
  result = run("-m", "convnet.main", "--config=configs/default.py", f"--workdir={tmp_path / 'run'}",
               "--config.model.features=(4,4)", "--config.progress=False", *small)  # fmt: skip
  assert result.returncode == 0, result.stderr
  last = result.stdout.strip().splitlines()[-1]
  assert last.startswith("test accuracy ") and "after 1 epoch(s)" in last
  assert f"files in {tmp_path / 'run'}: config.json, metrics.jsonl, summary.json, checkpoints/, tensorboard/" in last
  result = run("-m", "convnet.main", "--config=configs/sweep.py", f"--workdir={tmp_path / 'sweep'}",
               "--config.sweep.axes.features=((8,8),)", "--config.sweep.axes.kernel_size=(3,5)", "--config.sweep.axes.seeds=(0,)",
               *small, "--config.num_epochs=3", "--config.learning_rate=0.003",
               "--config.dataset.validation_size=60")  # fmt: skip
  assert result.returncode == 0, result.stderr
  lines = result.stdout.strip().splitlines()
  assert lines[-3].startswith("smoke check, not an answer: one seed per configuration")
  assert (
    lines[-2].startswith("sweet spot: features=8-8,kernel_size=") and "(n=1) validation accuracy (test " in lines[-2]
  )
  sweep_dir = tmp_path / "sweep"
  assert lines[
    -1
  ] == f"report: {sweep_dir / 'report.md'}; also: {sweep_dir / 'answer.json'}, {sweep_dir / 'results.csv'}, " + (
    f"{sweep_dir / 'pareto.png'}, {sweep_dir / 'learning_curves.png'}"
  )
