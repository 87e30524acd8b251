"""Accelerator hosts, checked on the CPU: device defaults per platform, any eval batch and any seed count
on any device count, no silent CPU fallback (a plugin's failure simulated), the platform asked for,
preallocation off, and numerics every run records. Forced CPU devices run in subprocesses, so the rest
of the suite keeps one device. (Tests that need a real GPU: tests/test_on_accelerator.py.)"""

import json
import os
from pathlib import Path
import subprocess
import sys

from conftest import REPO, sweep_config, tiny_config
import jax
import pytest

from convnet import batching, devices, input_pipeline, programs, runtime, steps, train
from convnet.errors import ConfigError
from convnet.sweep import driver


def test_a_run_defaults_to_all_cpu_devices_and_to_one_gpu_or_tpu():
  assert devices.default_count("cpu", 8) == 8  # forced host devices share the CPU's cores
  assert devices.default_count("gpu", 8) == 1  # a batch-32 step split over 8 GPUs waits on an all-reduce per step
  assert devices.default_count("tpu", 4) == 1


@pytest.mark.parametrize(
  "seeds, available, layout",
  [(3, 2, (2, 4)), (3, 8, (3, 3)), (5, 4, (3, 6)), (8, 8, (8, 8)), (1, 8, (1, 1)), (4, 2, (2, 4)), (7, 1, (1, 7))],
)
def test_any_seed_count_is_placed_on_any_device_count(seeds, available, layout):
  used, slots = devices.seeds_layout(seeds, available)
  assert (used, slots) == layout
  assert slots % used == 0 and slots >= seeds  # every device holds the same number of models


def test_evaluation_batches_pad_to_the_device_count():
  assert [devices.padded(500, n) for n in (1, 2, 3, 8)] == [500, 500, 501, 504]


def test_the_platform_asked_for_is_set_before_jax_starts_and_memory_is_not_preallocated(monkeypatch):
  import jax

  monkeypatch.setattr(runtime, "backend_started", lambda: False)
  updates = []
  monkeypatch.setattr(jax.config, "update", lambda name, value: updates.append((name, value)))
  for name in ("JAX_PLATFORMS", runtime.PREALLOCATE):
    monkeypatch.delenv(name, raising=False)
  runtime.configure_xla("cpu")
  assert os.environ["JAX_PLATFORMS"] == "cpu" and os.environ[runtime.PREALLOCATE] == "false"
  assert updates == [("jax_platforms", "cpu")]  # jax, imported already, read JAX_PLATFORMS at its import
  runtime.configure_xla("gpu")
  assert os.environ["JAX_PLATFORMS"] == "cuda"  # the GPU plugin's platform name (JAX's 'gpu' alias tries ROCm too)
  monkeypatch.setenv(runtime.PREALLOCATE, "true")
  monkeypatch.delenv("JAX_PLATFORMS")
  runtime.configure_xla(None)
  assert os.environ[runtime.PREALLOCATE] == "true" and "JAX_PLATFORMS" not in os.environ  # nothing over the user's


def test_deterministic_gpu_ops_are_asked_for_with_a_flag_this_jaxlib_knows(monkeypatch):
  monkeypatch.setattr(runtime, "backend_started", lambda: False)
  monkeypatch.setenv("XLA_FLAGS", "")
  monkeypatch.setenv("CONVNET_NO_XLA_FLAGS", "1")
  assert not runtime.deterministic_in_force()
  runtime.configure_xla(None, deterministic=True)
  flags = os.environ["XLA_FLAGS"].split()
  assert len(flags) == 1 and flags[0] in runtime.DETERMINISTIC_FLAGS and runtime.jaxlib_knows(flags[0])
  assert runtime.deterministic_in_force()
  assert not runtime.jaxlib_knows("--xla_gpu_no_such_flag_anywhere=true")


def test_every_run_records_its_numerics_and_jax_build(idx_dir, tmp_path):
  summary = train.train_and_evaluate(tiny_config(idx_dir, num_epochs=1), str(tmp_path / "run"))
  assert summary["matmul_precision"] == "float32" and summary["deterministic"] is False
  assert summary["jax_build"].startswith("jax ") and "jaxlib " in summary["jax_build"]
  with pytest.raises(ConfigError, match=r"^matmul_precision='fp16' is not allowed; use one of"):
    train.train_and_evaluate(tiny_config(idx_dir, matmul_precision="fp16"), str(tmp_path / "bad"))


def _main(args, env, cwd=REPO, timeout=600):
  return subprocess.run([sys.executable, "-m", "convnet.main", *args], cwd=cwd, env=env, capture_output=True,
                        text=True, timeout=timeout)  # fmt: skip


@pytest.mark.slow
def test_eight_cpu_devices_run_the_default_config_and_a_seeds_group_of_three_without_a_flag(idx_dir, tmp_path):
  env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
  # The default config's batch sizes (the eval batches pad over 8 devices), on a small network.
  single = _main(["--config=configs/default.py", f"--workdir={tmp_path / 'single'}", f"--config.dataset.dir={idx_dir}",
                  "--config.num_epochs=1", "--config.progress=False", "--config.inference.seconds=0",
                  "--config.model.features=(8,8)"], env)  # fmt: skip
  assert single.returncode == 0, single.stderr[-3000:]
  summary = json.loads((tmp_path / "single" / "summary.json").read_text())
  assert summary["mesh"] == {"data": 8} and summary["num_devices"] == 8
  assert summary["num_test_examples"] == 103  # eval batches of 500 padded to 504 over 8 devices: every image once
  sweep = _main(["--config=configs/sweep.py", "--config.progress=False", f"--workdir={tmp_path / 'sweep'}", f"--config.dataset.dir={idx_dir}",
                 "--config.dataset.validation_size=60", "--config.sweep.axes.features=((4,4),)",
                 "--config.sweep.axes.kernel_size=(3,)", "--config.sweep.axes.seeds=(0,1,2)",
                 "--config.sweep.seeds_together=True", "--config.num_epochs=1", "--config.inference.seconds=0"], env)  # fmt: skip
  assert sweep.returncode == 0, sweep.stderr[-3000:]
  lines = [json.loads(line) for line in (tmp_path / "sweep" / "results.jsonl").read_text().splitlines()]
  assert len(lines) == 3 and {line["status"] for line in lines} == {"completed"}
  assert {json.dumps(line["mesh"]) for line in lines} == {'{"seeds": 3}'}  # 3 seeds on 3 of the 8 devices


FAKE_PLUGIN = """
def initialize():
  raise RuntimeError("simulated: the CUDA driver could not be loaded")
"""


@pytest.mark.slow
def test_a_host_whose_accelerator_plugin_fails_stops_in_one_line_unless_the_cpu_is_asked_for(idx_dir, tmp_path):
  plugin = tmp_path / "plugins" / "jax_plugins" / "convnet_fake_gpu"
  plugin.mkdir(parents=True)
  (plugin / "__init__.py").write_text(FAKE_PLUGIN)
  env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{tmp_path / 'plugins'}"}
  env.pop("JAX_PLATFORMS", None)
  args = ["--config=configs/default.py", f"--config.dataset.dir={idx_dir}", "--config.num_epochs=1",
          "--config.model.features=(4,4)", "--config.progress=False", "--config.inference.seconds=0"]  # fmt: skip
  failed = _main([*args, f"--workdir={tmp_path / 'fallback'}"], env)
  assert failed.returncode == 1  # (JAX itself logs the plugin's traceback above convnet's one line)
  assert (
    failed.stderr.strip()
    .splitlines()[-1]
    .startswith(
      "error: JAX fell back to the CPU although the accelerator plugin(s) jax_plugins.convnet_fake_gpu are installed"
    )
  ), failed.stderr[-2000:]
  assert not (tmp_path / "fallback" / "metrics.jsonl").exists()  # stopped before training
  asked = _main([*args, f"--workdir={tmp_path / 'cpu'}", "--config.backend=cpu"], env)
  assert asked.returncode == 0, asked.stderr[-3000:]
  assert json.loads((tmp_path / "cpu" / "summary.json").read_text())["backend"] == "cpu"


def test_accelerator_presence_is_read_from_plugins_and_device_files(monkeypatch, tmp_path):
  monkeypatch.setattr(runtime, "plugins_installed", lambda: [])
  monkeypatch.setattr(runtime, "NVIDIA_DEVICE_FILES", (str(tmp_path / "nvidia0"),))
  monkeypatch.setattr(runtime, "Path", lambda p: tmp_path / "no-pci" if p == "/sys/bus/pci/devices" else Path(p))
  assert runtime.accelerator_present() is None
  (tmp_path / "nvidia0").touch()
  assert runtime.accelerator_present() == f"NVIDIA device files exist ({tmp_path / 'nvidia0'})"
  monkeypatch.setattr(runtime, "plugins_installed", lambda: ["jax_cuda13_plugin"])
  assert runtime.accelerator_present() == "the accelerator plugin(s) jax_cuda13_plugin are installed"


def test_seeds_and_learning_rates_train_as_one_program_each_equal_to_its_separate_run(idx_dir):
  config = tiny_config(idx_dir).to_dict()
  data = input_pipeline.get_datasets(config["dataset"])
  members = ((0, 1e-3), (0, 3e-3), (1, 3e-3))
  together = programs.SeedsProgram(config, data, seeds=[s for s, _ in members], learning_rates=[r for _, r in members])
  trained, tested = together.train_epoch(1), together.evaluate()
  alone = []
  for seed, rate in members:
    init_rng, shuffle_rng = jax.random.split(jax.random.PRNGKey(seed))
    own = {**config, "learning_rate": rate}
    state = steps.create_train_state(init_rng, own, data.image_shape, data.num_classes)
    program = programs.EpochProgram(state, data, own, shuffle_rng)
    state, metrics = program.train_epoch(state, 1)
    alone.append((metrics["loss"], program.evaluate(state)["test_loss"]))
  for (train_loss, test_loss), got_train, got_test in zip(alone, trained, tested, strict=True):
    assert got_train["loss"] == pytest.approx(train_loss, rel=1e-4)
    assert got_test["test_loss"] == pytest.approx(test_loss, rel=1e-4)
  assert abs(alone[0][1] - alone[1][1]) > 1e-3  # the rates differ in effect: the comparison could fail


def test_a_sweep_trains_the_seeds_and_learning_rates_of_an_architecture_as_one_task(idx_dir, tmp_path):
  fields = {"sweep.axes.seeds": (0, 1), "sweep.axes.learning_rate": (1e-3, 3e-3)}
  together = driver.run(sweep_config(idx_dir, **fields, **{"sweep.seeds_together": True}), tmp_path / "together")
  apart = driver.run(sweep_config(idx_dir, **fields), tmp_path / "apart")
  lines = {r["name"]: r for r in together.results}
  assert len(lines) == 4 and {r["seeds_together"] for r in lines.values()} == {4}  # one program for all four
  for record in apart.results:
    assert "seeds_together" not in record
    assert lines[record["name"]]["validation_loss"] == pytest.approx(record["validation_loss"], rel=1e-4)


def test_asynchronous_checkpoints_resume_like_synchronous_ones(idx_dir, tmp_path, monkeypatch):
  from convnet.rundir import checkpoints, files

  runs = {}
  for mode in (False, True):  # the CPU saves synchronously; a GPU or TPU asynchronously (forced here)
    monkeypatch.setattr(checkpoints, "asynchronous_here", lambda mode=mode: mode)
    workdir = tmp_path / f"async={mode}"
    train.train_and_evaluate(tiny_config(idx_dir, num_epochs=2), str(workdir))
    assert checkpoints.epochs(workdir) == [1, 2]  # complete before the summary says so
    summary = train.train_and_evaluate(tiny_config(idx_dir, num_epochs=3), str(workdir))  # resumes from epoch 2
    assert summary["resumed_from"] == 2 and checkpoints.epochs(workdir) == [2, 3]
    runs[mode] = [r["train_loss"] for r in files.read_jsonl(workdir / "metrics.jsonl")]
  assert runs[True] == runs[False]  # the same numbers, bit for bit, on the CPU


@pytest.mark.slow
def test_the_local_executor_runs_trials_side_by_side_each_on_its_own_device(idx_dir, tmp_path):
  env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  common = ["--config=configs/sweep.py", "--config.progress=False", f"--config.dataset.dir={idx_dir}",
            "--config.dataset.validation_size=60", "--config.sweep.axes.features=((4,4),)",
            "--config.sweep.axes.kernel_size=(3,)", "--config.sweep.axes.seeds=(0,1)", "--config.num_epochs=1",
            "--config.num_devices=1", "--config.inference.seconds=0"]  # fmt: skip
  side = _main([*common, f"--workdir={tmp_path / 'side'}", "--config.sweep.executor.side_by_side=2"], env)
  assert side.returncode == 0, side.stderr[-3000:]
  alone = _main([*common, f"--workdir={tmp_path / 'alone'}"], env)  # the CPU's default: one at a time
  assert alone.returncode == 0, alone.stderr[-3000:]
  read = {name: {r["name"]: r for r in map(json.loads, (tmp_path / name / "results.jsonl").read_text().splitlines())}
          for name in ("side", "alone")}  # fmt: skip
  assert len(read["side"]) == 2 and {r["status"] for r in read["side"].values()} == {"completed"}
  assert {tuple(r["device_ids"]) for r in read["side"].values()} == {(0,), (1,)}  # both devices trained trials
  assert max(r["concurrent_trials"] for r in read["side"].values()) == 2
  assert {tuple(r["device_ids"]) for r in read["alone"].values()} == {(0,)}
  assert {r["concurrent_trials"] for r in read["alone"].values()} == {1}
  for name, record in read["alone"].items():  # the same trials, the same numbers, wherever they ran
    assert read["side"][name]["validation_loss"] == pytest.approx(record["validation_loss"], rel=1e-6)
  too_many = _main([*common, f"--workdir={tmp_path / 'bad'}", "--config.sweep.executor.side_by_side=3"], env)
  assert too_many.returncode == 1
  assert (
    too_many.stderr.strip()
    .splitlines()[-1]
    .startswith("error: sweep.executor.side_by_side=3 with 1 device(s) per trial needs 3 devices; this machine has 2")
  )


def test_the_programs_keep_images_flat_on_the_device_with_the_same_results(idx_dir):
  config = tiny_config(idx_dir).to_dict()
  data = input_pipeline.get_datasets(config["dataset"])
  init_rng, shuffle_rng = jax.random.split(jax.random.PRNGKey(0))
  state = steps.create_train_state(init_rng, config, data.image_shape, data.num_classes)
  program = programs.EpochProgram(state, data, config, shuffle_rng)
  assert program.train_images.shape == (len(data.train_labels), 28 * 28)  # no minor dimension of 1 to pad on a TPU
  assert {arrays[0].ndim for arrays in program.eval_sets.values()} == {2}
  together = programs.SeedsProgram(config, data, seeds=(0, 1))
  assert together.images.shape == (len(data.train_labels), 28 * 28)
  flat = state.apply_fn({"params": state.params}, batching.flat(data.test_images[:8]))
  nhwc = state.apply_fn({"params": state.params}, data.test_images[:8])
  assert jax.numpy.array_equal(flat, nhwc)  # the step restores NHWC: the same logits
