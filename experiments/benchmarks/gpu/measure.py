"""The device check's figures: convnet on one accelerator, timed the way experiments/benchmarks times the CPU.

    python experiments/benchmarks/gpu/measure.py --data_dir=DIR --out=DIR [--quick]

Run by run.sh (beside this file) after the accelerator tests. Each part is timed on its own, and one
that fails is reported and skipped (the rest still run). Figures go to OUT/figures.json, one entry
per part, and a table is printed last. Epoch times are medians of the epochs after the first
(compilation is outside them, timed apart); every part states its batch size, precision and dtype.

Parts: the seed network at batch 32 (the whole epoch one scanned, compiled call; float32 and TF32), at
batch 1024 in bfloat16, 8 seeds and 8 learning rates trained together against one, a synchronous checkpoint save (what it
costs beside an epoch), Adam per parameter array against Adam over one flat vector (``convnet.xla_paths``),
the seed network's inference (batch-1 latency and throughput at batch 1024, float32
and bfloat16), the PyTorch peer on the same device (plain float32
channels-last and bfloat16 autocast), and the default sweep end to end (run.sh runs it; the
figures read its records). ``--quick`` (the CPU dry run in tests/test_gpu_check.py, on its small
fixture data) takes 2 epochs, 2 seeds and an 8-8 network: it checks that every part runs, not the figures.
"""

import argparse
import json
import os
from pathlib import Path
import statistics
import sys
import tempfile
import time
import traceback

from convnet import runtime

runtime.configure_xla()  # the platform as installed, preallocation off, before JAX starts

import jax  # noqa: E402
import numpy as np  # noqa: E402

from convnet import configuration, devices, input_pipeline, peers, programs, steps, xla_paths  # noqa: E402
from convnet.rundir import provenance  # noqa: E402


def seed_config(data_dir: str, **changes):
  config = configuration.load_config("configs/default.py")
  config.dataset.dir = data_dir
  config.steps_per_call = 0  # the whole epoch as one scanned call
  config.progress = False
  config.update_from_flattened_dict(changes)
  return config.to_dict()


def time_one(config, data, epochs: int) -> dict:
  init_rng, shuffle_rng = jax.random.split(jax.random.PRNGKey(0))
  state = steps.create_train_state(init_rng, config, data.image_shape, data.num_classes)
  program = programs.EpochProgram(state, data, config, shuffle_rng)
  seconds = []
  for epoch in range(1, epochs + 1):
    start = time.perf_counter()
    state, metrics = program.train_epoch(state, epoch)
    seconds.append(time.perf_counter() - start)
  steady = statistics.median(seconds[1:] or seconds)
  return {
    "epoch_seconds": seconds,
    "median_epoch_seconds": steady,
    "examples_per_second": program.num_train / steady,
    "compile_seconds": program.compile_seconds,
    "test_accuracy": program.evaluate(state)["test_accuracy"],
    "batch_size": config["batch_size"],
    "dtype": config["model"]["dtype"],
    "matmul_precision": config["matmul_precision"],
    "mesh": devices.describe(program.mesh),
  }


def time_seeds(config, data, count: int, epochs: int, rates: bool = False) -> dict:
  """``count`` models together: seeds 0..count-1, or (``rates``) seed 0 at learning rates 1e-4 .. 3e-3."""
  seeds = tuple(range(count)) if not rates else (0,) * count
  learning_rates = [float(r) for r in np.geomspace(1e-4, 3e-3, count)] if rates else None
  program = programs.SeedsProgram(config, data, seeds=seeds, learning_rates=learning_rates)
  seconds = []
  for epoch in range(1, epochs + 1):
    start = time.perf_counter()
    program.train_epoch(epoch)
    seconds.append(time.perf_counter() - start)
  accuracies = [r["test_accuracy"] for r in program.evaluate()]
  return {
    "models": count,
    "learning_rates": learning_rates,
    "epoch_seconds": seconds,
    "median_epoch_seconds": statistics.median(seconds[1:] or seconds),
    "compile_seconds": program.compile_seconds,
    "test_accuracy_min_max": [min(accuracies), max(accuracies)],
    "mesh": devices.describe(program.mesh),
  }


def main() -> int:
  parser = argparse.ArgumentParser()
  parser.add_argument("--data_dir", required=True)
  parser.add_argument("--out", required=True)
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--parts", default="", help="comma-separated parts to run (default: all)")
  args = parser.parse_args()
  wanted = set(filter(None, args.parts.split(",")))
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  epochs, seeds = (2, 2) if args.quick else (4, 8)
  figures: dict = {"environment": {**provenance.environment(), "code": provenance.code_record()["git"]}}
  stats = getattr(jax.devices()[0], "memory_stats", lambda: None)()
  figures["environment"]["memory_stats_after_start"] = stats

  def part(name, fn):
    if wanted and name not in wanted:
      return
    start = time.perf_counter()
    try:
      figures[name] = {**fn(), "wall_seconds": time.perf_counter() - start}
    except Exception as e:  # noqa: BLE001 - one part's failure is a figure too; the others still run
      traceback.print_exc()
      figures[name] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
    print(f"{name}: {json.dumps(figures[name])}", flush=True)
    (out / "figures.json").write_text(json.dumps(figures, indent=1))

  # --quick: a small network (8-8 filters) stands in for the seed network; only that every part runs counts.
  small = {"model.features": (8, 8), "model.dense_features": (16,)} if args.quick else {}
  base = seed_config(args.data_dir, **small, **({"inference.seconds": 0.05} if args.quick else {}))
  data = input_pipeline.get_datasets(base["dataset"])
  part("seed_batch32_float32", lambda: time_one(base, data, epochs))
  part("seed_batch32_tensorfloat32", lambda: time_one({**base, "matmul_precision": "tensorfloat32"}, data, epochs))
  big = seed_config(args.data_dir, batch_size=1024, eval_batch_size=1000, matmul_precision="bfloat16",
                    **{"model.dtype": "bfloat16"}, **small)  # fmt: skip
  part("seed_batch1024_bfloat16", lambda: time_one(big, data, epochs))
  part("seeds_together", lambda: time_seeds(base, data, seeds, epochs))
  part("learning_rates_together", lambda: time_seeds(base, data, seeds, epochs, rates=True))
  one = figures.get("seed_batch32_float32", {}).get("median_epoch_seconds")
  for name in ("seeds_together", "learning_rates_together"):
    many = figures.get(name, {}).get("median_epoch_seconds")
    if one and many:
      figures[name]["time_over_one_model"] = many / one
      figures[name]["models_per_one_model_time"] = seeds * one / many

  def checkpoint_saves():  # what a synchronous save per epoch costs beside an epoch on this device
    from convnet.rundir import checkpoints

    init_rng, _ = jax.random.split(jax.random.PRNGKey(0))
    state = steps.create_train_state(init_rng, base, data.image_shape, data.num_classes)
    seconds = []
    with tempfile.TemporaryDirectory() as where:
      for epoch in range(1, 5):
        start = time.perf_counter()
        checkpoints.save(where, epoch, state)
        seconds.append(time.perf_counter() - start)
    return {"save_seconds": seconds, "median_save_seconds": statistics.median(seconds[1:])}

  part("checkpoint_save", checkpoint_saves)
  # Adam per parameter array (convnet's) against one update over a flat vector: slower on XLA:CPU; here?
  layout_steps, layout_repeats = (20, 2) if args.quick else (400, 5)
  part("optimizer_layouts", lambda: xla_paths.optimizer_layouts(data, layout_steps, layout_repeats))

  def inference_speed():  # the seed network's batch-1 latency and throughput here, float32 and bfloat16 at batch 1024
    from convnet import inference, models

    state = steps.create_train_state(jax.random.PRNGKey(0), base, data.image_shape, data.num_classes)
    seconds = 0.1 if args.quick else 4.0
    out = {}
    for name, changes in (("float32", {}), ("bfloat16", {"dtype": "bfloat16"})):
      kwargs = {**configuration.model_kwargs(base, data.num_classes), **changes}
      precision = {"matmul_precision": "bfloat16"} if changes else {}
      settings = {**base, **precision, "inference": {"seconds": seconds, "batch_size": 1024}}
      out[name] = inference.measure(models.ConvNet(**kwargs), state.params, data.image_shape, settings)
    return out

  part("inference", inference_speed)

  def whole_runs():  # a single run's wall time with synchronous and with asynchronous checkpoints
    from convnet import train
    from convnet.rundir import checkpoints

    runs = {}
    for mode in ("synchronous", "asynchronous", "synchronous again", "asynchronous again"):
      checkpoints.asynchronous_here = lambda mode=mode: mode.startswith("asynchronous")
      with tempfile.TemporaryDirectory() as where:
        config = {**base, "num_epochs": 1 if args.quick else 5, "tensorboard": False}
        summary = train.train_and_evaluate(config, where)
      outside = summary["total_seconds"] - summary["train_seconds"]
      runs[mode] = {"total_seconds": summary["total_seconds"], "train_seconds": summary["train_seconds"],
                    "outside_epochs_seconds": outside, "compile_seconds": summary["compile_seconds"]}  # fmt: skip
    return {"epochs": config["num_epochs"], "runs": runs}

  part("whole_run_checkpoints", whole_runs)

  def determinism():  # two processes each, with and without XLA's deterministic GPU ops: equal to the bit?
    import subprocess

    losses = {}
    for deterministic in (False, True):
      for attempt in (1, 2):
        with tempfile.TemporaryDirectory() as where:
          command = [sys.executable, "-m", "convnet.main", "--config=configs/default.py", f"--workdir={where}",
                     f"--config.dataset.dir={args.data_dir}", "--config.num_epochs=2", "--config.progress=False",
                     "--config.tensorboard=False", f"--config.deterministic={deterministic}",
                     "--config.inference.seconds=0"] + [f"--config.{k}={v}".replace(" ", "") for k, v in small.items()]  # fmt: skip
          subprocess.run(command, check=True, capture_output=True, text=True, timeout=600)
          summary = json.loads((Path(where) / "summary.json").read_text())
          lines = [json.loads(line) for line in (Path(where) / "metrics.jsonl").read_text().splitlines()]
          losses[f"deterministic={deterministic} run {attempt}"] = {
            "train_loss": [line["train_loss"] for line in lines], "test_loss": [line["test_loss"] for line in lines],
            "epoch_seconds": [line["epoch_seconds"] for line in lines], "recorded": summary["deterministic"]}  # fmt: skip
    same = {f"deterministic={flag}": losses[f"deterministic={flag} run 1"]["train_loss"]
            == losses[f"deterministic={flag} run 2"]["train_loss"] for flag in (False, True)}  # fmt: skip
    return {"runs": losses, "bit_identical_across_processes": same}

  part("determinism", determinism)

  def peer_epochs():
    impls = ["convnet", "pytorch-cl", "pytorch-amp"]
    results, infos = peers.run_alternating(impls, 2 if args.quick else 3, 32, base["dataset"], print)
    table = {}
    for name, rows in results.items():
      seconds = [r["epoch_seconds"] for r in rows]
      table[name] = {"epoch_seconds": seconds, "median_epoch_seconds": statistics.median(seconds[1:] or seconds),
                     "test_accuracy": rows[-1]["test_accuracy"], "settings": infos[name].get("settings")}  # fmt: skip
    skipped = sorted(set(impls) - set(results))
    return {"batch_size": 32, "implementations": table, "skipped": skipped}

  part("peers_batch32", peer_epochs)

  rows = [("part", "s/epoch (median)", "examples/s", "compile s", "test acc")]
  for name, fig in figures.items():
    if isinstance(fig, dict) and "median_epoch_seconds" in fig:
      rate = f"{fig['examples_per_second']:,.0f}" if "examples_per_second" in fig else "-"
      accuracy = fig.get("test_accuracy", fig.get("test_accuracy_min_max"))
      rows.append((name, f"{fig['median_epoch_seconds']:.3f}", rate, f"{fig['compile_seconds']:.1f}", str(accuracy)))
  for name, fig in (figures.get("peers_batch32") or {}).get("implementations", {}).items():
    rows.append((f"peer {name}", f"{fig['median_epoch_seconds']:.3f}", "-", "-", f"{fig['test_accuracy']:.4f}"))
  for row in rows:
    print(" | ".join(f"{cell:>28}" if i == 0 else f"{cell:>16}" for i, cell in enumerate(row)))
  failed = [name for name, fig in figures.items() if isinstance(fig, dict) and "error" in fig]
  print(f"parts failed: {failed}" if failed else "all parts ran")
  return 1 if failed else 0


if __name__ == "__main__":
  os.environ.setdefault("PYTHONUNBUFFERED", "1")
  sys.exit(main())
