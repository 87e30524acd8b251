"""Side-by-side timing of convnet against PyTorch and Keras (TensorFlow), and over the sweep grid.

    pip install -e ".[bench]"                                 # the peers (optional)
    python -m convnet.benchmark --epochs=3                    # seed network: convnet and every peer variant
    python -m convnet.benchmark --mode=grid --steps=200       # ms/step over the sweep grid
    python -m convnet.benchmark --mode=xla                    # the XLA:CPU slow paths convnet avoids

Peers mode (``convnet.peers``): convnet and each peer variant train the seed network of
``configs/default.py`` in their own processes, alternating epochs. Compilation (convnet) is timed
apart; peers that trace or compile in their first epoch are compared on the median of epochs
2..N, and so is convnet. The table gives convnet's time over each variant's, then over each peer's
fastest variant: the ratios to quote.

Grid mode: for each configuration of ``configs/sweep.py``, ms/step of convnet's whole-epoch program,
of the same with its first layer unfused (``model.fuse_max_channels=0``, the ablation of
``ops.conv_relu_pool``), and of plain Flax layers (``nn.Conv``/``nn.max_pool``) with one jit per step,
alternating.

XLA mode (``--mode=xla``, ``convnet.xla_paths``): the three XLA:CPU slow paths that ``convnet.ops`` and
``convnet.runtime`` avoid, each timed at the seed network's shapes against what convnet does instead, and
Adam per parameter array against Adam over one flat vector (epochs of ``--steps`` steps).
"""

import statistics
import time
from typing import Any

from absl import flags

from convnet import cli, configuration, input_pipeline, models, peers, programs, steps, xla_paths
from convnet.rundir import provenance
from convnet.sweep import trials


def define_flags(values: flags.FlagValues) -> None:
  define = {"flag_values": values}
  modes = ["peers", "grid", "xla"]
  flags.DEFINE_enum(
    "mode", "peers", modes, "peers: convnet vs its peers; grid: the sweep grid; xla: XLA:CPU paths.", **define
  )
  flags.DEFINE_integer("epochs", 3, "Epochs per implementation (peers mode); >= 2 for a steady figure.", **define)
  flags.DEFINE_list("impls", list(peers.IMPLEMENTATIONS), "Implementations to compare (peers mode).", **define)
  flags.DEFINE_integer("batch_size", 32, "Batch size.", **define)
  flags.DEFINE_integer("num_train_examples", 0, "Limit the train set (0 = all 60,000).", **define)
  flags.DEFINE_integer("steps", 200, "Timed steps per configuration and repeat (grid); per epoch (xla mode).", **define)
  flags.DEFINE_string("grid", "configs/sweep.py", "The sweep config whose grid is timed (grid mode).", **define)
  flags.DEFINE_integer("repeats", 3, "Alternating repeats per configuration (grid mode).", **define)
  flags.DEFINE_string("data_dir", None, "IDX directory (default: configs/default.py's).", **define)


def _data_config(data_dir: str | None, num_train: int) -> dict[str, Any]:
  dataset = configuration.load_config("configs/default.py").dataset.to_dict()
  dataset.update({"dir": data_dir or dataset["dir"], "num_train_examples": num_train or None})
  return dataset


def _say(text: str) -> None:
  print(text, flush=True)


def print_peer_table(results, infos, batch_size: int) -> dict[str, float]:
  """Prints s/epoch, accuracy and convnet's ratio per implementation and per peer's fastest variant."""
  num_train = next(iter(infos.values()))["num_train"]
  steady = {name: statistics.median(r["epoch_seconds"] for r in (runs[1:] or runs)) for name, runs in results.items()}
  print(f"\nSeed network (configs/default.py), batch {batch_size}, Adam, {num_train:,} train images; "
        "s/epoch = median of epochs 2..N")  # fmt: skip
  print(f"{'implementation':16s} {'epoch 1 s':>10s} {'s/epoch':>9s} {'examples/s':>11s} {'test acc':>9s} "
        f"{'convnet/this':>13s}  settings")  # fmt: skip
  for name, runs in results.items():
    ratio = steady["convnet"] / steady[name] if "convnet" in steady else float("nan")
    print(f"{name:16s} {runs[0]['epoch_seconds']:10.2f} {steady[name]:9.2f} {num_train / steady[name]:11,.0f} "
          f"{100 * runs[-1]['test_accuracy']:8.2f}% {ratio:13.2f}  {infos[name].get('settings', '')}")  # fmt: skip
  fastest = {}
  for name in steady:
    if name != "convnet" and steady[name] < steady.get(fastest.get(peers.family(name)), float("inf")):
      fastest[peers.family(name)] = name
  if "convnet" in steady:
    for peer, name in fastest.items():
      print(
        f"convnet / {peer}'s fastest variant ({name}, {steady[name]:.2f} s): {steady['convnet'] / steady[name]:.2f}"
      )
    info = infos["convnet"]
    config = peers.seed_config(batch_size).to_dict()
    specs = models.layer_specs(configuration.model_kwargs(config, info["num_classes"]), info["image_shape"])
    # Training FLOPs: forward + input gradient + weight gradient, except the first layer's input gradient.
    nominal = 3 * sum(s.flops for s in specs) - specs[0].flops
    executed = 3 * sum(s.executed_flops for s in specs) - specs[0].executed_flops  # convnet skips what pools drop
    achieved = executed * num_train / steady["convnet"] / 1e9
    peak = infos["convnet"]["peak_gflops"]
    print(f"convnet compile: {infos['convnet']['compile_seconds']:.2f} s (excluded above)")
    print(f"convnet executes {executed / 1e6:.2f} MFLOP per training example (the network as defined: {nominal / 1e6:.2f}; "
          f"the rows/columns the pools drop are not computed) -> {achieved:.1f} GFLOP/s = {100 * achieved / peak:.0f}% "
          f"of this device's measured float32 GEMM peak ({peak:.0f} GFLOP/s, 2048^3 matmul at full float32 precision, not TF32 or bf16)")  # fmt: skip
  return steady


def run_grid(
  timed_steps: int, repeats: int, batch_size: int, data_dir: str | None, grid: str = "configs/sweep.py"
) -> list[dict[str, Any]]:
  """ms/step over the sweep grid: convnet's scanned program (as configured, and with its first layer
  unfused: ``model.fuse_max_channels=0``) vs plain Flax layers with one jit per step, alternating."""
  import jax

  data = input_pipeline.get_datasets(_data_config(data_dir, 0))
  rows, seen = [], set()
  for trial in trials.expand(configuration.load_config(grid)):
    model = trial.config.model.to_dict()
    key = (tuple(model["features"]), model["kernel_size"])
    if key in seen:
      continue
    seen.add(key)
    config = {**trial.config.to_dict(), "batch_size": batch_size, "steps_per_call": timed_steps}
    compiled = {}
    for variant, changes in _grid_variants(jax.default_backend()).items():
      variant_config = {**config, "model": {**config["model"], **changes}}
      state = steps.create_train_state(jax.random.PRNGKey(0), variant_config, data.image_shape, data.num_classes)
      program = programs.EpochProgram(state, data, variant_config, jax.random.PRNGKey(1))
      compiled[variant] = [program.step_fns[min(timed_steps, program.num_steps)], state]
    indices, mask = program.shuffle_fn(jax.random.PRNGKey(2))
    flax_config = {**config, "model": {**config["model"], "ops": "flax"}}
    flax_state = steps.create_train_state(jax.random.PRNGKey(0), flax_config, data.image_shape, data.num_classes)
    images, labels = program.train_images, program.train_labels
    flax_steps = max(10, timed_steps // 10)  # one jit per step, the slow path on a CPU: fewer steps
    times = {**{variant: [] for variant in compiled}, "flax layers, one jit per step": []}
    for _ in range(repeats + 1):  # the first round warms up and is dropped
      for variant, (fn, state) in compiled.items():
        start = time.perf_counter()
        state, metrics = fn(state, images, labels, indices[:timed_steps], mask[:timed_steps])
        jax.block_until_ready(metrics)
        times[variant].append((time.perf_counter() - start) / timed_steps * 1e3)
        compiled[variant][1] = state
      # The batches are gathered before the clock starts: the baseline times the step, not eager indexing.
      batches = jax.block_until_ready(
        [{"image": images[indices[i]], "label": labels[indices[i]], "mask": mask[i]} for i in range(flax_steps)]
      )
      start = time.perf_counter()
      for batch in batches:
        flax_state, metrics = steps.train_step(flax_state, batch)
      jax.block_until_ready(metrics)
      times["flax layers, one jit per step"].append((time.perf_counter() - start) / flax_steps * 1e3)
    ms = {variant: statistics.median(t[1:]) for variant, t in times.items()}
    name = trials.trial_name({"model.features": key[0], "model.kernel_size": key[1]})
    rows.append({"config": name, **{f"{v}_ms": t for v, t in ms.items()}, "steps_per_epoch": program.num_steps})
    per_epoch = {v: t * program.num_steps / 1e3 for v, t in ms.items()}
    timings = "   ".join(f"{v} {ms[v]:6.2f} ms/step ({per_epoch[v]:5.1f} s/epoch)" for v in ms)
    speedups = ", ".join(f"vs {v} {ms[v] / ms['convnet']:4.2f}x" for v in ms if v != "convnet")
    print(f"{name:32s} {timings}   speed-up of convnet {speedups}", flush=True)
  return rows


def _grid_variants(backend: str) -> dict[str, dict[str, Any]]:
  """The scanned programs the grid compares, by the model fields they change: on the CPU, convnet as
  configured (its fast ops) and with its first layer unfused; on GPU/TPU, convnet as configured
  ('auto': the lax/Flax layers) and with convnet's CPU-tuned ops forced ('fast')."""
  if backend == "cpu":
    return {"convnet": {}, "unfused first layer": {"fuse_max_channels": 0}}
  return {"convnet": {}, "fast ops": {"ops": "fast"}}


def main(values: flags.FlagValues) -> None:
  environment = provenance.environment()
  code = provenance.code_label(provenance.code_record())
  _say(f"backend {environment['backend']}, device {environment['device']}, {environment['machine']}; {code}")
  if values.mode == "grid":
    run_grid(values.steps, values.repeats, values.batch_size, values.data_dir, values.grid)
    return
  if values.mode == "xla":
    xla_paths.run(input_pipeline.get_datasets(_data_config(values.data_dir, 0)), values.steps)
    return
  if values.epochs < 1:
    cli.fail(f"--epochs={values.epochs} is not allowed; use >= 1 (>= 2 for a steady figure)")
  unknown = [name for name in values.impls if name not in peers.IMPLEMENTATIONS]
  if unknown:
    cli.fail(f"--impls has {unknown[0]!r}; allowed: {', '.join(peers.IMPLEMENTATIONS)}")
  data_config = _data_config(values.data_dir, values.num_train_examples)
  try:
    results, infos = peers.run_alternating(values.impls, values.epochs, values.batch_size, data_config, _say)
  except RuntimeError as e:
    cli.fail(str(e))
  if results:
    print_peer_table(results, infos, values.batch_size)


if __name__ == "__main__":
  cli.run(main, define_flags)
