"""The accelerator tier: what only a GPU (or TPU) can show. Skipped on the CPU; on a GPU host run

    CONVNET_TEST_PLATFORM=gpu,cpu python -m pytest -m accelerator tests/test_on_accelerator.py

(experiments/benchmarks/gpu/run.sh does; the CPU beside the GPU is the reference for precision). Device placement, the cuDNN path ('auto' ops are Flax's
layers there), float32 matmuls that agree with the CPU where TF32 does not, bfloat16 training, seeds
trained together equal to separate runs, and memory that is not preallocated. Comparisons allow
float rounding (GPU reductions are not bit-reproducible); none asks for bit-equality.
"""

import json
import os
import subprocess
import sys

from conftest import REPO, tiny_config
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from convnet import input_pipeline, models, programs, steps, train

pytestmark = [
  pytest.mark.accelerator,
  pytest.mark.skipif(
    jax.default_backend() == "cpu",
    reason="needs a GPU or TPU: CONVNET_TEST_PLATFORM=gpu,cpu python -m pytest -m accelerator (the suite pins the CPU)",
  ),
]


def test_a_single_run_trains_on_one_accelerator_with_its_own_layers(idx_dir, tmp_path):
  summary = train.train_and_evaluate(tiny_config(idx_dir, num_epochs=2), str(tmp_path / "run"))
  assert summary["backend"] == jax.default_backend() != "cpu"
  assert summary["mesh"] == {"data": 1}  # one device by default, however many the host has
  assert summary["matmul_precision"] == "float32"
  assert set(summary["code"]["ops"].values()) == {"flax nn.Conv + nn.max_pool"}  # cuDNN's convolutions
  assert summary["test_accuracy"] > 0.3 and np.isfinite(summary["train_loss"])


def _logits_on(device, precision: str, model_config, params, images):
  with jax.default_matmul_precision(precision):
    apply = jax.jit(lambda p, x: models.ConvNet(**model_config).apply({"params": p}, x))
    return np.asarray(apply(jax.device_put(params, device), jax.device_put(images, device)))


def test_float32_matmuls_agree_with_the_cpu_where_tensorfloat32_does_not():
  try:
    cpu = jax.devices("cpu")[0]
  except RuntimeError:
    pytest.skip("no CPU backend beside the accelerator: CONVNET_TEST_PLATFORM=gpu,cpu")
  model_config = {"features": (64, 64), "kernel_size": 3, "dense_features": (128,), "num_classes": 10, "ops": "flax"}
  rng = np.random.default_rng(0)
  images = rng.random((256, 28, 28, 1), dtype=np.float32)
  params = models.ConvNet(**model_config).init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)))["params"]
  reference = _logits_on(cpu, "float32", model_config, params, images)
  scale = np.linalg.norm(reference)
  full = np.linalg.norm(_logits_on(jax.devices()[0], "float32", model_config, params, images) - reference) / scale
  fast = np.linalg.norm(_logits_on(jax.devices()[0], "tensorfloat32", model_config, params, images) - reference) / scale
  print(f"relative error against the CPU: float32 {full:.2e}, tensorfloat32 {fast:.2e}")
  assert full < 1e-5
  assert fast > full  # the setting reaches the device's kernels


def test_bfloat16_training_learns(idx_dir, tmp_path):
  summary = train.train_and_evaluate(
    tiny_config(idx_dir, num_epochs=3, **{"model.dtype": "bfloat16", "matmul_precision": "bfloat16"}),
    str(tmp_path / "bf16"),
  )
  assert summary["matmul_precision"] == "bfloat16" and summary["test_accuracy"] > 0.3


def test_seeds_together_on_the_accelerator_equal_separate_runs(idx_dir):
  config = tiny_config(idx_dir).to_dict()
  data = input_pipeline.get_datasets(config["dataset"])
  together = programs.SeedsProgram(config, data, seeds=(0, 1, 2))
  trained, tested = together.train_epoch(1), together.evaluate()
  for position, seed in enumerate((0, 1, 2)):
    init_rng, shuffle_rng = jax.random.split(jax.random.PRNGKey(seed))
    state = steps.create_train_state(init_rng, config, data.image_shape, data.num_classes)
    alone = programs.EpochProgram(state, data, config, shuffle_rng)
    state, metrics = alone.train_epoch(state, 1)
    assert trained[position]["loss"] == pytest.approx(metrics["loss"], rel=1e-3)
    assert tested[position]["test_loss"] == pytest.approx(alone.evaluate(state)["test_loss"], rel=1e-3)


MEMORY = """
from convnet import runtime
runtime.configure_xla()
import json, jax, jax.numpy as jnp
jnp.ones(1024).block_until_ready()
print(json.dumps(jax.devices()[0].memory_stats()))
"""


def test_a_convnet_process_does_not_preallocate_the_device():
  env = {k: v for k, v in os.environ.items() if k != "XLA_PYTHON_CLIENT_PREALLOCATE"}
  env["PYTHONPATH"] = str(REPO / "src")
  result = subprocess.run([sys.executable, "-c", MEMORY], env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  stats = json.loads(result.stdout.strip().splitlines()[-1])
  print(stats)
  held = stats.get("pool_bytes", stats.get("bytes_reserved", stats["bytes_in_use"]))
  assert held < 0.05 * stats["bytes_limit"]  # JAX's default would hold 75% of the device
