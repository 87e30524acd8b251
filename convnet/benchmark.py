"""Side-by-side timing of convnet against Keras (TensorFlow) and PyTorch, and over the sweep grid.

    pip install -e .[bench]                                   # the peers (optional)
    python -m convnet.benchmark --epochs=3                    # seed network, all three, alternating
    python -m convnet.benchmark --mode=grid --steps=200       # ms/step over the sweep grid

Peers mode: each implementation trains the same network (Conv 64@3x3 → pool → Conv 64@3x3 → pool →
Dense 128 → Dense 10, VALID), on the same uint8 data scaled to [0, 1], batch 32, Adam 1e-3, shuffled
every epoch, each in its own worker process. The coordinator runs epoch 1 of every implementation,
then epoch 2 of every one, and so on, so that the machine's drift hits all alike; only one worker
computes at a time. Compilation (convnet) is timed separately; Keras traces its step during its first
epoch, so the figure compared is the median of epochs 2..N. A peer that is not installed is skipped.

Grid mode: for each configuration of ``configs/sweep.py``, ms/step of convnet's whole-epoch program,
of the same with its first layer unfused (``model.fuse_max_channels=0``, the ablation of
``ops.conv_relu_pool``), and of plain Flax layers (``nn.Conv``/``nn.max_pool``) with one jit per step,
alternating.
"""

from convnet import runtime

runtime.configure_xla()

from collections.abc import Callable  # noqa: E402
import importlib.util  # noqa: E402
import multiprocessing  # noqa: E402
from pathlib import Path  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

from absl import flags  # noqa: E402
import numpy as np  # noqa: E402

from convnet import cli  # noqa: E402

IMPLEMENTATIONS = ("convnet", "pytorch", "keras")
PEER_MODULES = {"pytorch": "torch", "keras": "tensorflow"}

flags.DEFINE_enum("mode", "peers", ["peers", "grid"], "peers: convnet vs Keras vs PyTorch; grid: the sweep grid.")
flags.DEFINE_integer("epochs", 3, "Epochs per implementation (peers mode); >= 2 for a steady figure.")
flags.DEFINE_list("impls", list(IMPLEMENTATIONS), "Implementations to compare (peers mode).")
flags.DEFINE_integer("batch_size", 32, "Batch size.")
flags.DEFINE_integer("num_train_examples", 0, "Limit the train set (0 = all 60,000).")
flags.DEFINE_integer("steps", 200, "Timed steps per configuration and repeat (grid mode).")
flags.DEFINE_integer("repeats", 3, "Alternating repeats per configuration (grid mode).")
flags.DEFINE_string("data_dir", None, "IDX directory (default: the Debian package's).")
FLAGS = flags.FLAGS


def _data(data_dir: str | None, num_train: int):
  from convnet import input_pipeline

  config = {"source": "idx", "dir": data_dir or input_pipeline.DEFAULT_IDX_DIR}
  if num_train:
    config["num_train_examples"] = num_train
  return input_pipeline.get_datasets(config)


# --- workers: each builds its model, then trains one epoch per request ------------------------------


def _convnet_worker(data, batch_size: int) -> tuple[dict[str, float], Callable[[int], dict[str, float]]]:
  import jax

  from convnet import train

  config = {
    "model": {"features": (64, 64), "kernel_size": 3, "dense_features": (128,)},
    "optimizer": "adam",
    "learning_rate": 1e-3,
    "batch_size": batch_size,
    "eval_batch_size": 500,
    "steps_per_call": 0,  # the whole epoch in one compiled call
  }
  init_rng, shuffle_rng = jax.random.split(jax.random.PRNGKey(0))
  holder = {"state": train.create_train_state(init_rng, config, data.image_shape, data.num_classes)}
  program = train.EpochProgram(holder["state"], data, config, shuffle_rng)

  def epoch(index: int) -> dict[str, float]:
    start = time.perf_counter()
    holder["state"], metrics = program.train_epoch(holder["state"], index)
    seconds = time.perf_counter() - start
    return {
      "epoch_seconds": seconds,
      "train_loss": metrics["loss"],
      "test_accuracy": program.evaluate(holder["state"])["accuracy"],
    }

  return {"compile_seconds": program.compile_seconds, "peak_gflops": _measure_peak_gflops()}, epoch


def _measure_peak_gflops() -> float:
  """The best fp32 GEMM rate this machine reaches through XLA (median of 2048^3 matmuls)."""
  import jax
  import jax.numpy as jnp

  a = jax.random.normal(jax.random.PRNGKey(0), (2048, 2048), jnp.float32)
  matmul = jax.jit(lambda x, y: x @ y)
  matmul(a, a).block_until_ready()
  times = []
  for _ in range(7):
    start = time.perf_counter()
    matmul(a, a).block_until_ready()
    times.append(time.perf_counter() - start)
  return 2 * 2048**3 / statistics.median(times) / 1e9


def _pytorch_worker(data, batch_size: int):
  import torch
  from torch import nn

  torch.manual_seed(0)
  model = nn.Sequential(
    nn.Conv2d(1, 64, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(64, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(1600, 128), nn.ReLU(), nn.Linear(128, data.num_classes),
  )  # fmt: skip
  optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
  loss_fn = nn.CrossEntropyLoss()
  to_tensor = lambda images: torch.from_numpy(images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)  # noqa: E731
  x_train, y_train = to_tensor(data.train_images), torch.from_numpy(data.train_labels.astype(np.int64))
  x_test, y_test = to_tensor(data.test_images), torch.from_numpy(data.test_labels.astype(np.int64))

  def epoch(index: int) -> dict[str, float]:
    model.train()
    order = torch.randperm(len(y_train))
    start = time.perf_counter()
    total = torch.zeros(())
    for begin in range(0, len(order), batch_size):
      batch = order[begin : begin + batch_size]
      optimizer.zero_grad(set_to_none=True)
      loss = loss_fn(model(x_train[batch]), y_train[batch])
      loss.backward()
      optimizer.step()
      total += loss.detach() * len(batch)  # no host read per step
    seconds = time.perf_counter() - start
    total = float(total)
    model.eval()
    with torch.no_grad():
      correct = sum(
        int((model(x_test[i : i + 500]).argmax(1) == y_test[i : i + 500]).sum()) for i in range(0, len(y_test), 500)
      )
    return {"epoch_seconds": seconds, "train_loss": total / len(y_train), "test_accuracy": correct / len(y_test)}

  return {"threads": torch.get_num_threads(), "version": torch.__version__}, epoch


def _keras_worker(data, batch_size: int):
  import os

  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  import tensorflow as tf

  tf.random.set_seed(0)
  keras = tf.keras
  model = keras.Sequential([
    keras.Input(data.image_shape),
    keras.layers.Conv2D(64, 3, activation="relu"), keras.layers.MaxPooling2D(2),
    keras.layers.Conv2D(64, 3, activation="relu"), keras.layers.MaxPooling2D(2),
    keras.layers.Flatten(), keras.layers.Dense(128, activation="relu"), keras.layers.Dense(data.num_classes),
  ])  # fmt: skip
  model.compile(
    optimizer=keras.optimizers.Adam(1e-3),
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    metrics=["accuracy"],
  )
  x_train, y_train = data.train_images.astype(np.float32) / 255.0, data.train_labels
  x_test, y_test = data.test_images.astype(np.float32) / 255.0, data.test_labels

  def epoch(index: int) -> dict[str, float]:
    start = time.perf_counter()
    history = model.fit(x_train, y_train, batch_size=batch_size, epochs=1, shuffle=True, verbose=0)
    seconds = time.perf_counter() - start
    _, accuracy = model.evaluate(x_test, y_test, batch_size=500, verbose=0)
    return {
      "epoch_seconds": seconds,
      "train_loss": float(history.history["loss"][-1]),
      "test_accuracy": float(accuracy),
    }

  return {"version": tf.__version__}, epoch


WORKERS = {"convnet": _convnet_worker, "pytorch": _pytorch_worker, "keras": _keras_worker}


def _serve(name: str, data_dir: str | None, num_train: int, batch_size: int, connection) -> None:
  """A worker process: set up, report, then one epoch per request until told to stop."""
  if name == "convnet":
    runtime.configure_xla()
  try:
    data = _data(data_dir, num_train)
    start = time.perf_counter()
    info, epoch = WORKERS[name](data, batch_size)
    info["setup_seconds"] = time.perf_counter() - start
    connection.send(("ready", info))
    while (request := connection.recv()) is not None:
      connection.send(("epoch", epoch(request)))
  except Exception as e:  # noqa: BLE001 - reported to the coordinator, which carries on without it
    connection.send(("error", f"{type(e).__name__}: {e}"))


def run_peers(impls, epochs: int, batch_size: int, num_train: int, data_dir: str | None) -> dict[str, Any]:
  """Alternating epochs of each implementation; prints and returns the table."""
  context = multiprocessing.get_context("spawn")
  workers = {}
  for name in impls:
    if name not in WORKERS:
      cli.fail(f"--impls has {name!r}; allowed: {', '.join(IMPLEMENTATIONS)}")
    if name in PEER_MODULES and importlib.util.find_spec(PEER_MODULES[name]) is None:
      print(f"note: {name} skipped: {PEER_MODULES[name]} is not installed (pip install -e .[bench])")
      continue
    parent, child = context.Pipe()
    process = context.Process(target=_serve, args=(name, data_dir, num_train, batch_size, child), daemon=True)
    process.start()
    workers[name] = (process, parent)
  infos, results = {}, {name: [] for name in workers}
  for name, (process, connection) in list(workers.items()):  # set-up one at a time, too
    kind, payload = connection.recv()
    if kind == "error":
      print(f"note: {name} skipped: {payload}")
      del workers[name], results[name]
      process.kill()
      continue
    infos[name] = payload
    print(f"{name}: ready ({payload})", flush=True)
  for epoch in range(1, epochs + 1):
    for name, (_, connection) in workers.items():
      connection.send(epoch)
      kind, payload = connection.recv()
      if kind == "error":
        cli.fail(f"{name} failed in epoch {epoch}: {payload}")
      results[name].append(payload)
      print(
        f"epoch {epoch} {name:8s} {payload['epoch_seconds']:7.2f} s  test acc {100 * payload['test_accuracy']:.2f}%",
        flush=True,
      )
  for process, connection in workers.values():
    connection.send(None)
    process.join(timeout=30)
  return _print_peer_table(results, infos, num_train or 60000, batch_size)


def _print_peer_table(results, infos, num_train: int, batch_size: int) -> dict[str, Any]:
  from convnet import models

  specs = models.layer_specs(
    {"features": (64, 64), "kernel_size": 3, "dense_features": (128,), "num_classes": 10}, (28, 28, 1)
  )
  # Training FLOPs: forward + input gradient + weight gradient, except the first layer's input gradient.
  nominal = 3 * sum(s.flops for s in specs) - specs[0].flops
  executed = 3 * sum(s.executed_flops for s in specs) - specs[0].executed_flops  # convnet skips what pools drop
  steady = {name: statistics.median(r["epoch_seconds"] for r in (runs[1:] or runs)) for name, runs in results.items()}
  print()
  print(f"Seed network, batch {batch_size}, Adam 1e-3, {num_train:,} train images; s/epoch = median of epochs 2..N")
  print(
    f"{'implementation':14s} {'epoch 1 s':>10s} {'s/epoch':>9s} {'examples/s':>11s} {'test acc':>9s} {'convnet/this':>13s}"
  )
  for name, runs in results.items():
    ratio = steady["convnet"] / steady[name] if "convnet" in steady else float("nan")
    print(
      f"{name:14s} {runs[0]['epoch_seconds']:10.2f} {steady[name]:9.2f} {num_train / steady[name]:11,.0f} "
      f"{100 * runs[-1]['test_accuracy']:8.2f}% {ratio:13.2f}"
    )
  if "convnet" in steady:
    achieved = executed * num_train / steady["convnet"] / 1e9
    peak = infos["convnet"]["peak_gflops"]
    print(f"convnet compile: {infos['convnet']['compile_seconds']:.2f} s (excluded above)")
    print(f"convnet executes {executed / 1e6:.2f} MFLOP per training example (the network as defined: {nominal / 1e6:.2f}; "
          f"the rows/columns the pools drop are not computed) -> {achieved:.1f} GFLOP/s = {100 * achieved / peak:.0f}% "
          f"of this machine's measured fp32 GEMM peak ({peak:.0f} GFLOP/s, 2048^3 matmul)")  # fmt: skip
  return {"steady_seconds": steady, "results": results, "infos": infos}


def _one_step(state, images, labels, indices, mask):
  """One jitted train step that gathers its batch inside the jit (the plain-Flax baseline)."""
  import jax

  from convnet import train

  global _ONE_STEP
  if _ONE_STEP is None:
    _ONE_STEP = jax.jit(lambda s, x, y, i, m: train._train_step(s, x[i], y[i], m))
  return _ONE_STEP(state, images, labels, indices, mask)


_ONE_STEP = None


def run_grid(steps: int, repeats: int, batch_size: int, data_dir: str | None) -> list[dict[str, Any]]:
  """ms/step over the sweep grid: convnet's scanned program (as configured, and with its first layer
  unfused: ``model.fuse_max_channels=0``) vs plain Flax layers with one jit per step, alternating."""
  import jax

  from convnet import models, sweep, train

  data = _data(data_dir, 0)
  grid = cli.load_config(Path(__file__).resolve().parents[1] / "configs" / "sweep.py")
  rows = []
  seen = set()
  for trial in sweep.expand(grid):
    model = dict(trial.config.model)
    key = (tuple(model["features"]), model["kernel_size"])
    if key in seen:
      continue
    seen.add(key)
    config = {**trial.config.to_dict(), "batch_size": batch_size, "steps_per_call": steps}
    programs = {}
    for variant, fuse in (("convnet", models.normalized(model)["fuse_max_channels"]), ("unfused", 0)):
      variant_config = {**config, "model": {**config["model"], "fuse_max_channels": fuse}}
      state = train.create_train_state(jax.random.PRNGKey(0), variant_config, data.image_shape, data.num_classes)
      program = train.EpochProgram(state, data, variant_config, jax.random.PRNGKey(1))
      programs[variant] = [program.step_fns[min(steps, program.num_steps)], state]
    indices, mask = program.shuffle_fn(jax.random.PRNGKey(2))
    flax_config = {**config, "model": {**config["model"], "ops": "flax"}}
    flax_state = train.create_train_state(jax.random.PRNGKey(0), flax_config, data.image_shape, data.num_classes)
    images, labels = program.train_images, program.train_labels
    flax_steps = max(10, steps // 10)  # the slow path: fewer steps
    times = {"convnet": [], "unfused": [], "flax": []}
    for _ in range(repeats + 1):  # the first round warms up and is dropped
      for variant, (fn, state) in programs.items():
        start = time.perf_counter()
        state, metrics = fn(state, images, labels, indices[:steps], mask[:steps])
        jax.block_until_ready(metrics)
        times[variant].append((time.perf_counter() - start) / steps * 1e3)
        programs[variant][1] = state
      start = time.perf_counter()
      for i in range(flax_steps):
        flax_state, metrics = _one_step(flax_state, images, labels, indices[i], mask[i])
      jax.block_until_ready(metrics)
      times["flax"].append((time.perf_counter() - start) / flax_steps * 1e3)
    ms = {variant: statistics.median(t[1:]) for variant, t in times.items()}
    name = sweep.trial_name({"model.features": key[0], "model.kernel_size": key[1]})
    rows.append({"config": name, **{f"{v}_ms": t for v, t in ms.items()}, "steps_per_epoch": program.num_steps})
    per_epoch = {v: t * program.num_steps / 1e3 for v, t in ms.items()}
    print(f"{name:32s} convnet {ms['convnet']:6.2f} ms/step ({per_epoch['convnet']:5.1f} s/epoch)   "
          f"unfused first layer {ms['unfused']:6.2f} ({per_epoch['unfused']:5.1f} s)   "
          f"flax layers {ms['flax']:6.2f} ({per_epoch['flax']:6.1f} s)   "
          f"speed-up vs flax {ms['flax'] / ms['convnet']:4.1f}x, vs unfused {ms['unfused'] / ms['convnet']:4.2f}x", flush=True)  # fmt: skip
  return rows


def main(argv):
  del argv
  if FLAGS.mode == "peers":
    if FLAGS.epochs < 1:
      cli.fail(f"--epochs={FLAGS.epochs} is not allowed; use >= 1 (>= 2 for a steady figure)")
    run_peers(FLAGS.impls, FLAGS.epochs, FLAGS.batch_size, FLAGS.num_train_examples, FLAGS.data_dir)
  else:
    run_grid(FLAGS.steps, FLAGS.repeats, FLAGS.batch_size, FLAGS.data_dir)


if __name__ == "__main__":
  cli.run(main)
