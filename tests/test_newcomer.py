"""What a newcomer runs into first: --help, config overrides typed the shell's way, odd workdirs."""

import os
from pathlib import Path
import subprocess
import sys

from conftest import sweep_config
import pytest

from convnet import cli, configuration, main, model_table, visualize
from convnet.errors import ConfigError, DataError
from convnet.rundir import files, locks

REPO = Path(__file__).resolve().parents[1]


def one_error(capsys, argv, define_flags=main.define_flags) -> str:
  """The one stderr line of ``argv``, checked to end the parse with exit status 1."""
  with pytest.raises(SystemExit) as exit_:
    cli.parse(argv, define_flags)
  assert exit_.value.code == 1
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and err.startswith("error: "), err
  return err.strip()


@pytest.mark.parametrize("define_flags", [main.define_flags, model_table.define_flags])
def test_help_shows_the_config_flag_and_how_to_list_and_override_its_fields(capsys, define_flags):
  with pytest.raises(SystemExit) as exit_:
    cli.parse(["prog", "--help"], define_flags)
  assert exit_.value.code == 0
  out = capsys.readouterr().out
  assert "--config: Config file, e.g. configs/default.py" in out
  assert "--config.FIELD=VALUE overrides a field; " in out and " --config=configs/default.py --help lists them" in out
  assert "--logtostderr" not in out  # absl's own flags are not the command's


def test_help_with_a_config_lists_every_field_with_its_value_overrides_applied(capsys):
  with pytest.raises(SystemExit) as exit_:
    cli.parse(["main", "--config=configs/default.py", "--config.num_epochs=3", "--help"], main.define_flags)
  assert exit_.value.code == 0
  fields = [line.strip() for line in capsys.readouterr().out.splitlines() if line.startswith("  --config.")]
  assert "--config.model.features=(64, 64)" in fields and "--config.dataset.source=idx" in fields
  assert "--config.num_epochs=3" in fields and "--config.num_epochs=5" not in fields
  assert len(fields) == len(files.flatten_dict(configuration.load_config("configs/default.py").to_dict()))


def test_help_without_config_lists_a_commands_own_flags(capsys):
  with pytest.raises(SystemExit) as exit_:
    cli.parse(["visualize", "--help"], visualize.define_flags)
  assert exit_.value.code == 0
  out = capsys.readouterr().out
  assert "--plot: <activations|filters>: What to draw." in out and "--out: Output PNG path." in out
  assert "--config" not in out  # visualize takes no config


def test_the_listing_that_help_suggests_works():
  env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
  shown = subprocess.run([sys.executable, "-m", "convnet.main", "--help"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
  assert shown.returncode == 0, shown.stderr
  hint = next(line for line in shown.stdout.splitlines() if line.startswith("--config.FIELD=VALUE"))
  command = hint.split("; ", 1)[1].removesuffix(" lists them")
  assert command == "python -m convnet.main --config=configs/default.py --help"
  listed = subprocess.run([sys.executable, *command.split()[1:]], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
  assert listed.returncode == 0, listed.stderr
  assert "  --config.model.features=(64, 64)" in listed.stdout.splitlines()


def test_a_config_field_with_its_value_after_a_space_gets_the_equals_form(capsys):
  argv = ["main", "--config=configs/default.py", "--workdir=w", "--config.num_epochs", "1"]
  assert one_error(capsys, argv) == (
    "error: --config.num_epochs 1: config fields take their value after '=': --config.num_epochs=1"
  )
  # A stray argument after a flag that takes no value is still just unexpected.
  argv = ["main", "--config=configs/default.py", "--workdir=w", "--config.num_epochs=1", "1"]
  assert one_error(capsys, argv).startswith("error: unexpected argument '1': this command takes flags only")


@pytest.mark.parametrize(
  "given, message",
  [
    (
      ["--config.model.features=(8,8)"] * 2,
      "--config.model.features is given twice: its values were joined into (8, 8, 8, 8)",
    ),
    (
      ["--config.model.dense_features=(16,)"] * 3,
      "--config.model.dense_features is given 3 times: its values were joined into (16, 16, 16)",
    ),
  ],
)
def test_a_tuple_field_given_twice_is_refused_naming_it(capsys, given, message):
  argv = ["main", "--config=configs/default.py", "--workdir=w", *given]
  assert one_error(capsys, argv) == f"error: {message}; give it once"
  # A scalar given twice keeps its last value, as absl's flags do (nothing is joined).
  argv = ["main", "--config=configs/default.py", "--workdir=w", "--config.num_epochs=1", "--config.num_epochs=3"]
  assert cli.parse(argv, main.define_flags).config.num_epochs == 3


def test_a_dangling_symlink_as_workdir_gets_one_clear_config_error(tmp_path):
  link = tmp_path / "runs"
  link.symlink_to(tmp_path / "gone")
  with pytest.raises(ConfigError) as error, locks.hold(link):
    pass
  assert str(error.value) == (
    f"--workdir={link} is a symlink to {tmp_path / 'gone'}, which does not exist; "
    "point it at an existing directory, or remove it"
  )
  with pytest.raises(ConfigError) as error, locks.hold(link / "default"):  # a run inside it
    pass
  assert str(error.value).startswith(f"{link} (in --workdir={link / 'default'}) is a symlink to {tmp_path / 'gone'}")
  assert not (tmp_path / "gone").exists()


def test_visualize_on_a_sweep_directory_names_its_trials(idx_dir, tmp_path):
  sweep_dir = tmp_path / "s"
  sweep_dir.mkdir()
  # A sweep writes a config.json too: that made it look like a run with no checkpoint.
  files.write_json(sweep_dir / "config.json", sweep_config(idx_dir).to_dict())
  (sweep_dir / "results.jsonl").write_text("")
  with pytest.raises(DataError) as error:
    visualize.load_run(sweep_dir)
  assert str(error.value).startswith(f"{sweep_dir} is a sweep directory with no trials yet")
  names = [f"features={f}-{f},kernel_size={k},seed=0" for f in (8, 16, 32) for k in (3, 5)]
  for name in names:
    (sweep_dir / "trials" / name).mkdir(parents=True)
    (sweep_dir / "trials" / name / "config.json").write_text("{}")
  with pytest.raises(DataError) as error:
    visualize.load_run(sweep_dir)
  shown = ", ".join(str(sweep_dir / "trials" / name) for name in sorted(names)[:5])
  assert str(error.value) == f"{sweep_dir} is a sweep directory; give one of its trials: {shown}, ... (6 in all)"


def test_the_model_table_of_a_sweep_config_shows_each_of_its_architectures(capsys):
  values = cli.parse(["model_table", "--config=configs/sweep.py:depth"], model_table.define_flags)
  model_table.main(values)
  out = capsys.readouterr().out
  assert out.startswith("3 architecture(s) in this sweep:")
  for name, params in (("features=64,kernel_size=3", "1,386,506"), ("features=64-64,kernel_size=3", "243,786")):
    assert f"\n{name}\n" in out or out.split("\n")[2] == name
    assert f"Total params: {params}" in out
  assert out.count("Total params:") == 3
