"""The device check (experiments/benchmarks/gpu/run.sh) dry-run on the CPU: every step runs as it would on a
GPU machine — the --no-deps install beside the machine's jax (checked unchanged), the accelerator tier
(skipped here), every timed part, the sweep and its report — at tiny sizes."""

import json
import os
from pathlib import Path
import subprocess

from conftest import REPO
import pytest


@pytest.mark.slow
def test_the_device_check_runs_every_step_on_the_cpu(idx_dir, tmp_path):
  out = tmp_path / "out"
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "JAX_PLATFORMS")}
  env["PYTHON"] = str(Path(os.sys.executable))
  result = subprocess.run(
    ["bash", str(REPO / "experiments" / "benchmarks" / "gpu" / "run.sh"), "--dry-run", str(out), str(idx_dir)],
    cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200,
  )  # fmt: skip
  log = (out / "log.txt").read_text() if (out / "log.txt").exists() else result.stdout
  assert result.returncode == 0, log[-4000:] + result.stderr[-2000:]
  assert "jax build kept" in log and "site/convnet-install" in log  # convnet came from its own --no-deps install
  tests = (out / "tests.txt").read_text()
  assert (
    "skipped" in tests.lower() and "failed" not in tests.lower()
  )  # the accelerator tier skips on the CPU, with its reason
  figures = json.loads((out / "figures.json").read_text())
  for part in (
    "seed_batch32_float32",
    "seed_batch32_tensorfloat32",
    "seed_batch1024_bfloat16",
    "seeds_together",
    "learning_rates_together",
  ):
    assert figures[part]["median_epoch_seconds"] > 0, part
  assert figures["seed_batch1024_bfloat16"]["dtype"] == "bfloat16"
  for part in ("seeds_together", "learning_rates_together"):
    assert figures[part]["models"] == 2 and figures[part]["models_per_one_model_time"] > 0
  assert len(set(figures["learning_rates_together"]["learning_rates"])) == 2
  assert "convnet" in figures["peers_batch32"]["implementations"]
  assert set(figures["whole_run_checkpoints"]["runs"]) == {"synchronous", "asynchronous", "synchronous again",
                                                           "asynchronous again"}  # fmt: skip
  runs = figures["determinism"]["runs"]
  assert [runs[f"deterministic={flag} run 1"]["recorded"] for flag in (False, True)] == [False, True]
  assert figures["determinism"]["bit_identical_across_processes"]["deterministic=True"] is True
  assert figures["environment"]["backend"] == "cpu"
  layouts = figures["optimizer_layouts"]  # the same training, per parameter array and over one flat vector
  per_array, flat = (layouts[name] for name in ("per array (optax.adam)", "flat (optax.flatten(optax.adam))"))
  assert flat["loss"] == pytest.approx(per_array["loss"], rel=1e-4) and flat["median"] > 0 < per_array["median"]
  for dtype in ("float32", "bfloat16"):
    assert figures["inference"][dtype]["latency_ms"] > 0 and figures["inference"][dtype]["throughput_batch"] == 1024
  assert (out / "sweep_report.md").exists() and json.loads((out / "sweep_answer.json").read_text())
  assert len([p for p in out.iterdir()]) <= 8  # what the device tool brings back
