"""Backends and devices: ops per backend, XLA flags only where they serve, the backend check, and data
parallelism over two CPU devices (forced with XLA_FLAGS, in subprocesses, so the rest of the suite
keeps one device)."""

import json
import os
import subprocess
import sys

from conftest import REPO
import pytest

from convnet import models, runtime

TWO_DEVICES = {**os.environ, "PYTHONPATH": str(REPO / "src"), "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}


def test_auto_ops_are_the_fast_ops_on_cpu_and_a_choice_elsewhere(monkeypatch):
  assert models.normalized({"ops": "auto"})["ops"] == "fast"  # this suite runs on the CPU
  monkeypatch.setattr(models.jax, "default_backend", lambda: "gpu")
  assert models.normalized({"ops": "auto"})["ops"] == "flax"
  assert models.normalized({"ops": "fast"})["ops"] == "fast"  # an explicit choice stands everywhere
  specs = models.layer_specs({"ops": "auto", "num_classes": 10}, (28, 28, 1))
  assert models.layer_ops(specs) == {"conv0": "flax nn.Conv + nn.max_pool", "conv1": "flax nn.Conv + nn.max_pool"}


def test_xla_cpu_flags_only_for_a_cpu_backend_and_never_over_the_users(monkeypatch):
  monkeypatch.setattr(runtime, "backend_started", lambda: False)
  monkeypatch.setattr(runtime, "select_platform", lambda backend: False)  # tests/test_accelerators.py checks it
  monkeypatch.delenv("CONVNET_NO_XLA_FLAGS", raising=False)
  monkeypatch.delenv("JAX_PLATFORMS", raising=False)
  monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/x --xla_cpu_experimental_ynn_fusion_type=default")
  assert runtime.configure_xla() is False  # the user's own setting of the flag stays
  assert os.environ["XLA_FLAGS"] == "--xla_dump_to=/tmp/x --xla_cpu_experimental_ynn_fusion_type=default"
  monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/x")
  assert runtime.configure_xla() is True
  assert os.environ["XLA_FLAGS"] == "--xla_dump_to=/tmp/x " + " ".join(runtime.CPU_FLAGS)
  for asked in ({"backend": "gpu"}, {"backend": "tpu"}):
    monkeypatch.setenv("XLA_FLAGS", "")
    assert runtime.configure_xla(**asked) is False and os.environ["XLA_FLAGS"] == ""
  monkeypatch.setenv("JAX_PLATFORMS", "cuda,cpu")
  assert runtime.configure_xla() is False and os.environ["XLA_FLAGS"] == ""
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  assert runtime.expects_cpu() is True
  monkeypatch.delenv("JAX_PLATFORMS")
  monkeypatch.setattr(runtime.importlib.util, "find_spec", lambda name: name == "jax_cuda13_plugin" or None)
  assert runtime.expects_cpu() is False  # a CUDA plugin is installed: the backend will be the GPU


def test_the_flag_is_looked_up_in_an_unknown_jaxlib(monkeypatch):
  assert runtime.jaxlib_knows(runtime.CPU_FLAGS[0])
  monkeypatch.setattr(runtime, "FLAGS_KNOWN_IN", ("9.9.",))  # as if this jaxlib were not a known one
  assert runtime.jaxlib_knows(runtime.CPU_FLAGS[0])  # its name is in the library
  assert not runtime.jaxlib_knows("--xla_cpu_no_such_flag_anywhere=1")


def run_two_devices(*args, timeout=600):
  return subprocess.run([sys.executable, *args], cwd=REPO, env=TWO_DEVICES, capture_output=True, text=True,
                        timeout=timeout)  # fmt: skip


def test_a_gpu_asked_for_on_a_cpu_machine_is_one_line(idx_dir, tmp_path):
  env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
  args = [
    "-m",
    "convnet.main",
    "--config=configs/default.py",
    f"--workdir={tmp_path}",
    f"--config.dataset.dir={idx_dir}",
  ]
  result = subprocess.run([sys.executable, *args, "--config.backend=gpu"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
  assert result.returncode == 1 and "Traceback" not in result.stderr
  assert (
    result.stderr.strip()
    .splitlines()[-1]
    .startswith("error: backend 'gpu' was asked for (config.backend or JAX_PLATFORMS) but JAX cannot start it")
  )


@pytest.mark.parametrize(
  "override, message",
  [
    ("--config.num_devices=3", "error: num_devices=3 is not allowed; this machine has 2 cpu device(s): use 1..2"),
    ("--config.batch_size=33", "error: batch_size=33 does not split over 2 devices; use a multiple of 2"),
  ],
)
def test_impossible_device_counts_are_one_line(idx_dir, tmp_path, override, message):
  result = run_two_devices("-m", "convnet.main", "--config=configs/default.py", f"--workdir={tmp_path}",
                           f"--config.dataset.dir={idx_dir}", override)  # fmt: skip
  assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
  assert result.stderr.strip().splitlines()[-1].startswith(message)


TWO_DEVICE_CHECKS = """
import json, sys
import jax
from conftest import tiny_config
from convnet import input_pipeline, programs, steps, train

assert jax.device_count() == 2, jax.devices()
data_dir, work = sys.argv[1], sys.argv[2]
out = {}
for n in (2, 1):
  summary = train.train_and_evaluate(tiny_config(data_dir, num_devices=n, num_epochs=2), f"{work}/d{n}")
  out[n] = {k: summary[k] for k in ("mesh", "train_loss", "test_loss", "test_accuracy")}
# A checkpoint written on 2 devices restores on 1.
resumed = train.train_and_evaluate(tiny_config(data_dir, num_devices=1, num_epochs=3), f"{work}/d2")
out["resumed"] = {"mesh": resumed["mesh"], "epoch": resumed["epoch"]}
# Seeds split over the devices, each equal to its separate run.
config = tiny_config(data_dir, num_devices=2).to_dict()
data = input_pipeline.get_datasets(config["dataset"])
program = programs.SeedsProgram(config, data, seeds=(0, 3))
together = [program.train_epoch(1), program.evaluate()]
out["seeds_sharding"] = list(program.stacked.params["Conv_0"]["kernel"].sharding.spec)
out["seeds"] = []
for position, seed in enumerate((0, 3)):
  init_rng, shuffle_rng = jax.random.split(jax.random.PRNGKey(seed))
  state = steps.create_train_state(init_rng, config, data.image_shape, data.num_classes)
  alone = programs.EpochProgram(state, data, {**config, "num_devices": 1}, shuffle_rng)
  state, metrics = alone.train_epoch(state, 1)
  out["seeds"].append([together[0][position]["loss"], metrics["loss"], together[1][position]["test_loss"], alone.evaluate(state)["test_loss"]])
print(json.dumps(out))
"""


@pytest.mark.slow
def test_two_devices_train_like_one_and_checkpoints_move_between_device_counts(idx_dir, tmp_path):
  script = tmp_path / "checks.py"
  script.write_text(TWO_DEVICE_CHECKS)
  env = {**TWO_DEVICES, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}"}
  result = subprocess.run([sys.executable, str(script), str(idx_dir), str(tmp_path)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
  assert result.returncode == 0, result.stderr[-3000:]
  out = json.loads(result.stdout.strip().splitlines()[-1])
  two, one = out["2"], out["1"]
  assert two["mesh"] == {"data": 2} and one["mesh"] == {"data": 1}
  for key in ("train_loss", "test_loss"):
    assert two[key] == pytest.approx(one[key], rel=1e-4), key  # the same global batches, summed in another order
  assert two["test_accuracy"] == pytest.approx(one["test_accuracy"], abs=1 / 103 + 1e-9)
  assert out["resumed"] == {"mesh": {"data": 1}, "epoch": 3}
  assert out["seeds_sharding"] == ["seeds"]  # each device holds its own seeds
  for together_train, alone_train, together_test, alone_test in out["seeds"]:
    assert together_train == pytest.approx(alone_train, rel=1e-4)
    assert together_test == pytest.approx(alone_test, rel=1e-4)


def free_port() -> int:
  import socket

  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_on_localhost_train_one_run_and_only_process_0_writes(idx_dir, tmp_path):
  port = free_port()
  args = ["-m", "convnet.main", "--config=configs/default.py", f"--workdir={tmp_path / 'two'}",
          f"--config.dataset.dir={idx_dir}", "--config.model.features=(8,8)", "--config.model.dense_features=(16,)",
          "--config.num_epochs=2", "--config.batch_size=16", "--config.eval_batch_size=50", "--config.steps_per_call=0",
          "--config.progress=False", "--config.inference.seconds=0", "--config.distributed=True"]  # fmt: skip
  base = {**os.environ, "PYTHONPATH": str(REPO / "src"), "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
          "JAX_NUM_PROCESSES": "2"}  # fmt: skip
  processes = [
    subprocess.Popen(
      [sys.executable, *args],
      cwd=REPO,
      env={**base, "JAX_PROCESS_ID": str(i)},
      text=True,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
    )  # fmt: skip
    for i in range(2)
  ]
  outputs = [p.communicate(timeout=600) for p in processes]
  for process, (_, stderr) in zip(processes, outputs, strict=True):
    assert process.returncode == 0, stderr[-3000:]
  assert outputs[0][0].strip().splitlines()[-1].startswith("test accuracy ") and "test accuracy" not in outputs[1][0]
  summary = json.loads((tmp_path / "two" / "summary.json").read_text())
  assert summary["mesh"] == {"data": 2} and summary["status"] == "completed"
  lines = (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(line)["epoch"] for line in lines] == [1, 2]  # one writer: each epoch once

  one = subprocess.run([sys.executable, *args[:3], f"--workdir={tmp_path / 'one'}", *args[4:-1]], cwd=REPO,  # not distributed
                       env={**os.environ, "PYTHONPATH": str(REPO / "src")}, capture_output=True, text=True, timeout=600)  # fmt: skip
  assert one.returncode == 0, one.stderr[-3000:]
  single = json.loads((tmp_path / "one" / "summary.json").read_text())
  assert single["mesh"] == {"data": 1}
  for key in ("train_loss", "test_loss"):
    assert summary[key] == pytest.approx(single[key], rel=1e-4), key
