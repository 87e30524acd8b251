"""The XLA:CPU slow paths convnet avoids, each timed against what convnet does instead, at the seed
network's shapes (``python -m convnet.benchmark --mode=xla``; the figures: experiments/benchmarks/README.md,
"What the speed rests on"):

* the max pool's gradient: ``reduce_window``'s ``select_and_scatter`` against ``ops.max_pool``;
* YNNPACK convolutions against Eigen's (``runtime.CPU_FLAGS``), for one conv and for the whole train step,
  each in a fresh process;
* autodiff's conv gradients inside a ``lax.scan`` against ``ops.conv2d``;
* the optimizer update over one flat vector (``optax.flatten(optax.adam(...))``: a few large kernels
  instead of a few per parameter array, which a device that pays for each kernel launch may prefer)
  against convnet's Adam per parameter array (``steps.make_optimizer``), in the seed network's scanned
  train step, alternating (:func:`optimizer_layouts`). On XLA:CPU the flat update measured slower, so
  convnet keeps its update per array; the device check (experiments/benchmarks/gpu/run.sh) times the
  same on a GPU.
"""

import multiprocessing
import os
import statistics
import time
from typing import Any

import flax.linen as nn
import jax
from jax import lax
import numpy as np
import optax

from convnet import configuration, input_pipeline, ops, programs, runtime, steps


def _random_data(count: int) -> input_pipeline.Dataset:
  """Random Fashion-MNIST-shaped images, for the convolutions' timings (their speed does not depend on the
  pixels; the flat optimizer update's slow epochs showed on real data only, so that one reads real data)."""
  rng = np.random.default_rng(0)
  images, labels = rng.integers(0, 256, (count, 28, 28, 1), np.uint8), rng.integers(0, 10, count).astype(np.int32)
  return input_pipeline.Dataset(images, labels, images[:500], labels[:500], tuple("0123456789"), "random")


def _seed_config(steps_per_call: int) -> dict[str, Any]:
  return {**configuration.load_config("configs/default.py").to_dict(), "steps_per_call": steps_per_call}


def _seed_program(data: input_pipeline.Dataset, steps_per_call: int, layout=lambda tx: tx):
  """The seed network's compiled epoch program over ``data`` and its fresh state, the optimizer wrapped
  by ``layout`` (see :data:`LAYOUTS`)."""
  config = _seed_config(steps_per_call)
  state = steps.create_train_state(jax.random.PRNGKey(0), config, data.image_shape, data.num_classes)
  tx = layout(state.tx)
  state = state.replace(tx=tx, opt_state=tx.init(state.params))
  return programs.EpochProgram(state, data, config, jax.random.PRNGKey(1)), state


def _timed_epoch(program: programs.EpochProgram, state: steps.TrainState, epoch: int):
  """One epoch: the new state, its metrics and its ms per step (the metrics are read: the epoch has finished)."""
  start = time.perf_counter()
  state, metrics = program.train_epoch(state, epoch)
  return state, metrics, (time.perf_counter() - start) / program.num_steps * 1e3


def _median_ms(fn, *args, repeats: int = 15) -> float:
  jax.block_until_ready(fn(*args))  # compile and warm up
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append((time.perf_counter() - start) * 1e3)
  return statistics.median(times)


def _lax_conv(x, kernel):
  return lax.conv_general_dilated(x, kernel, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _flag_ms(use_flag: bool, timed_steps: int, connection) -> None:
  """In a fresh process, with or without the XLA:CPU flag: ms for the seed's second conv (forward and
  both gradients, one jit) and ms per step of the seed network's scanned training program (epochs of
  ``timed_steps`` steps)."""
  kept = [f for f in os.environ.get("XLA_FLAGS", "").split() if f not in runtime.CPU_FLAGS]
  os.environ["XLA_FLAGS"] = " ".join(kept + (list(runtime.CPU_FLAGS) if use_flag else []))
  x, kernel = (
    jax.random.normal(jax.random.PRNGKey(0), (32, 13, 13, 64)),
    jax.random.normal(jax.random.PRNGKey(1), (3, 3, 64, 64)),
  )
  conv_ms = _median_ms(jax.jit(jax.grad(lambda x, k: _lax_conv(x, k).sum(), argnums=(0, 1))), x, kernel)
  program, state = _seed_program(_random_data(timed_steps * 32), timed_steps)
  times = []
  for epoch in range(1, 5):
    state, _, ms = _timed_epoch(program, state, epoch)
    times.append(ms)
  connection.send((conv_ms, statistics.median(times)))


def run(data: input_pipeline.Dataset, timed_steps: int = 200) -> None:
  """Times the XLA:CPU slow paths that convnet.ops and convnet.runtime avoid, at the seed's shapes, and the
  optimizer update per parameter array against one over a flat vector (on ``data``'s first training images)."""
  key = jax.random.PRNGKey(0)
  maps = jax.random.normal(key, (32, 26, 26, 64))  # the seed's first conv output at batch 32
  pool = {
    "reduce_window (nn.max_pool)": lambda x: nn.max_pool(x, (2, 2), strides=(2, 2)).sum(),
    "reshape-max (ops.max_pool)": lambda x: ops.max_pool(x, 2).sum(),
  }
  pool_ms = {name: _median_ms(jax.jit(jax.grad(fn)), maps) for name, fn in pool.items()}
  print("max pool 2x2 gradient, (32, 26, 26, 64): " + ", ".join(f"{n} {t:.2f} ms" for n, t in pool_ms.items()))

  context = multiprocessing.get_context("spawn")
  flag_ms = {}
  for use_flag in (False, True):
    parent, child = context.Pipe()
    process = context.Process(target=_flag_ms, args=(use_flag, timed_steps, child))
    process.start()
    flag_ms[use_flag] = parent.recv()
    process.join()
  flag = " ".join(runtime.CPU_FLAGS)
  print(f"conv 3x3 forward + gradients, (32, 13, 13, 64) x (3, 3, 64, 64), one jit: without the flag (YNNPACK) "
        f"{flag_ms[False][0]:.2f} ms, with {flag} (Eigen) {flag_ms[True][0]:.2f} ms")  # fmt: skip
  print(f"the seed network's scanned train step (batch 32): without the flag {flag_ms[False][1]:.2f} ms/step, "
        f"with it {flag_ms[True][1]:.2f} ms/step")  # fmt: skip

  x, kernel = jax.random.normal(key, (32, 13, 13, 64)), jax.random.normal(key, (3, 3, 64, 64))
  convs = {"autodiff of lax.conv": _lax_conv, "ops.conv2d": ops.conv2d}
  scan_length = 5
  scan_ms = {}
  for name, conv in convs.items():
    grad = jax.grad(lambda x, k, conv=conv: conv(x, k).sum(), argnums=(0, 1))

    def body(carry, _, grad=grad):
      grad_x, grad_k = grad(x + carry, kernel)
      return carry + 1e-6 * (grad_x.mean() + grad_k.mean()), None

    scanned = jax.jit(lambda body=body: lax.scan(body, 0.0, None, length=scan_length)[0])
    scan_ms[name] = _median_ms(scanned, repeats=5) / scan_length
  print(
    f"the same conv's gradients inside a lax.scan ({scan_length} steps): "
    + ", ".join(f"{n} {t:.2f} ms/step" for n, t in scan_ms.items())
  )
  print_optimizer_layouts(data, timed_steps)


LAYOUTS = {"per array (optax.adam)": lambda tx: tx, "flat (optax.flatten(optax.adam))": optax.flatten}


def optimizer_layouts(data: input_pipeline.Dataset, timed_steps: int, repeats: int = 7) -> dict[str, dict[str, Any]]:
  """The seed network's scanned train step (batch 32) with Adam per parameter array and over one flat
  vector, on the first ``timed_steps`` batches of ``data``'s training images, epochs alternating: for each,
  ms/step of every epoch after one warm-up epoch each (``ms``, their ``median``) and the training loss of
  each epoch (``loss``: the same training, so equal to float rounding)."""
  count = min(timed_steps * 32, len(data.train_labels))
  data = input_pipeline.Dataset(data.train_images[:count], data.train_labels[:count], data.test_images[:500],
                                data.test_labels[:500], data.class_names, data.source)  # fmt: skip
  programs_by_layout = {name: list(_seed_program(data, timed_steps, layout)) for name, layout in LAYOUTS.items()}
  out = {name: {"ms": [], "loss": []} for name in LAYOUTS}
  for epoch in range(repeats + 1):
    for name, (program, state) in programs_by_layout.items():
      programs_by_layout[name][1], metrics, ms = _timed_epoch(program, state, epoch)
      if epoch:
        out[name]["ms"].append(ms)
      out[name]["loss"].append(metrics["loss"])
  for figures in out.values():
    figures["median"] = statistics.median(figures["ms"])
  return out


def print_optimizer_layouts(data: input_pipeline.Dataset, timed_steps: int) -> None:
  figures = optimizer_layouts(data, timed_steps)
  (per_array, a), (flat, b) = figures.items()
  print(f"Adam in the seed network's scanned train step ({timed_steps} steps of batch 32 per epoch, {data.source}, "
        f"alternating; ms/step median of {len(a['ms'])} epochs after a warm-up): {per_array} {a['median']:.2f}, {flat} "
        f"{b['median']:.2f} ({b['median'] / a['median']:.2f}x); every epoch: "
        f"{', '.join(f'{x:.2f}' for x in a['ms'])} against {', '.join(f'{x:.2f}' for x in b['ms'])}; "
        f"last epoch's training loss {a['loss'][-1]:.5f} against {b['loss'][-1]:.5f}")  # fmt: skip
