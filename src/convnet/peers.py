"""The seed network in convnet and in its peers, each at its documented best, trained epoch by epoch.

One worker per implementation, each in its own process; :func:`run_alternating` starts them, then
asks each in turn for one epoch (epoch 1 of every one, then epoch 2 of every one, ...), so that the
machine's drift hits all alike and only one computes at a time. Every worker trains the network of
``configs/default.py`` (built from its ``model`` fields) on the same uint8 data scaled to [0, 1],
with Adam, shuffled every epoch. The peers' variants are the speed settings their own
documentation recommends for CPUs:

* PyTorch: ``pytorch`` is the plain recipe (NCHW tensors, eager); ``pytorch-cl`` puts the input
  and the model in channels-last memory format (PyTorch's CPU fast path through oneDNN, and cuDNN's
  preferred layout on a GPU); ``pytorch-compile`` adds ``torch.compile`` to that; ``pytorch-amp``
  (GPU only) runs channels-last under ``torch.autocast`` in bfloat16, PyTorch's mixed-precision recipe.
  On a host where PyTorch sees a CUDA GPU, every PyTorch variant trains on it, with the data on the
  GPU (as convnet's is) and the clock read after ``torch.cuda.synchronize()``.
* Keras 3 on TensorFlow: ``keras`` is ``model.fit`` without XLA (TensorFlow's oneDNN kernels, on by
  default on x86 Linux); ``keras-xla`` compiles the train step with XLA (``jit_compile=True``).

A peer that is not installed is skipped with a note (``pip install -e ".[bench]"``).
"""

from collections.abc import Callable, Mapping, Sequence
import contextlib
import importlib.util
import multiprocessing
import os
import statistics
import time
from typing import Any

import numpy as np

from convnet import configuration, input_pipeline, models, programs, runtime, steps
from convnet.rundir import provenance

EpochFn = Callable[[int], dict[str, float]]
IMPLEMENTATIONS = ("convnet", "pytorch", "pytorch-cl", "pytorch-compile", "pytorch-amp", "keras", "keras-xla")
PEER_MODULES = {"pytorch": "torch", "keras": "tensorflow"}


def family(name: str) -> str:
  """'pytorch-cl' -> 'pytorch': the framework an implementation belongs to."""
  return name.split("-")[0]


def seed_config(batch_size: int):
  """configs/default.py (the one place that knows the seed network) at ``batch_size``, whole-epoch calls."""
  config = configuration.load_config("configs/default.py")
  config.batch_size = batch_size
  config.steps_per_call = 0
  if config.optimizer != "adam":
    raise ValueError(f"the peers train with Adam; configs/default.py has optimizer={config.optimizer!r}")
  return config


def _layers(model: Mapping[str, Any]) -> list[tuple[int, int, int]]:
  """(filters, kernel, pool) per conv layer of a config's model (VALID padding, as the peers build it)."""
  cfg = models.normalized(model)
  if cfg["padding"] != "VALID":
    raise ValueError("the peers build VALID convolutions only")
  return list(zip(cfg["features"], cfg["kernel_size"], cfg["pool_size"], strict=True))


def _measure_peak_gflops() -> float:
  """The best float32 GEMM rate this device reaches through XLA (median of 2048^3 matmuls), at full float32
  precision: on a GPU, JAX's default would be a TF32 rate, and a TPU's a bfloat16 one."""
  import jax
  import jax.numpy as jnp

  a = jax.random.normal(jax.random.PRNGKey(0), (2048, 2048), jnp.float32)
  matmul = jax.jit(lambda x, y: jnp.matmul(x, y, precision=jax.lax.Precision.HIGHEST))
  matmul(a, a).block_until_ready()
  times = []
  for _ in range(7):
    start = time.perf_counter()
    matmul(a, a).block_until_ready()
    times.append(time.perf_counter() - start)
  return 2 * 2048**3 / statistics.median(times) / 1e9


def convnet_worker(data, batch_size: int, variant: str) -> tuple[dict[str, Any], EpochFn]:
  import jax

  config = seed_config(batch_size).to_dict()
  init_rng, shuffle_rng = jax.random.split(jax.random.PRNGKey(0))
  holder = {"state": steps.create_train_state(init_rng, config, data.image_shape, data.num_classes)}
  program = programs.EpochProgram(holder["state"], data, config, shuffle_rng)

  def epoch(index: int) -> dict[str, float]:
    start = time.perf_counter()
    holder["state"], metrics = program.train_epoch(holder["state"], index)
    seconds = time.perf_counter() - start
    return {"epoch_seconds": seconds, "train_loss": metrics["loss"],
            "test_accuracy": program.evaluate(holder["state"])["test_accuracy"]}  # fmt: skip

  environment = provenance.environment()
  settings = f"whole epoch in one compiled call, backend {environment['backend']} ({environment['device']})"
  return {
    "settings": settings,
    "compile_seconds": program.compile_seconds,
    "peak_gflops": _measure_peak_gflops(),
  }, epoch


def pytorch_worker(data, batch_size: int, variant: str) -> tuple[dict[str, Any], EpochFn]:
  import torch
  from torch import nn

  torch.manual_seed(0)
  device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
  if variant == "pytorch-amp" and device.type != "cuda":
    raise RuntimeError("pytorch-amp needs a CUDA GPU (bfloat16 autocast is no speed-up on this CPU)")
  layers, channels, (height, width) = [], data.image_shape[-1], data.image_shape[:2]
  config = seed_config(batch_size)
  model_config = config.model
  for filters, kernel, pool in _layers(model_config):
    layers += [nn.Conv2d(channels, filters, kernel), nn.ReLU()] + ([nn.MaxPool2d(pool)] if pool > 1 else [])
    channels, height, width = filters, (height - kernel + 1) // pool, (width - kernel + 1) // pool
  size = channels * height * width
  layers.append(nn.Flatten())
  for features in model_config.dense_features:
    layers += [nn.Linear(size, features), nn.ReLU()]
    size = features
  model = nn.Sequential(*layers, nn.Linear(size, data.num_classes))
  channels_last = variant in ("pytorch-cl", "pytorch-compile", "pytorch-amp")
  memory_format = torch.channels_last if channels_last else torch.contiguous_format
  model = model.to(device=device, memory_format=memory_format)
  optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
  forward = torch.compile(model) if variant == "pytorch-compile" else model
  loss_fn = nn.CrossEntropyLoss()
  autocast = (
    (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if variant == "pytorch-amp" else contextlib.nullcontext
  )

  def to_tensor(images):
    return (
      torch.from_numpy(images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
      .to(device)
      .contiguous(memory_format=memory_format)
    )

  def labels(values):
    return torch.from_numpy(values.astype(np.int64)).to(device)

  x_train, y_train = to_tensor(data.train_images), labels(data.train_labels)
  x_test, y_test = to_tensor(data.test_images), labels(data.test_labels)

  def synchronize():
    if device.type == "cuda":
      torch.cuda.synchronize()

  def epoch(index: int) -> dict[str, float]:
    model.train()
    order = torch.randperm(len(y_train), device=device)
    synchronize()
    start = time.perf_counter()
    total = torch.zeros((), device=device)
    for begin in range(0, len(order), batch_size):
      batch = order[begin : begin + batch_size]
      optimizer.zero_grad(set_to_none=True)
      with autocast():
        loss = loss_fn(forward(x_train[batch].contiguous(memory_format=memory_format)), y_train[batch])
      loss.backward()
      optimizer.step()
      total += loss.detach().float() * len(batch)  # no host read per step
    synchronize()
    seconds = time.perf_counter() - start
    model.eval()
    with torch.no_grad(), autocast():
      correct = sum(
        int((forward(x_test[i : i + 500]).argmax(1) == y_test[i : i + 500]).sum()) for i in range(0, len(y_test), 500)
      )
    return {"epoch_seconds": seconds, "train_loss": float(total) / len(y_train), "test_accuracy": correct / len(y_test)}

  settings = {
    "pytorch": "eager, NCHW tensors",
    "pytorch-cl": "eager, channels-last input and model",
    "pytorch-compile": "torch.compile, channels-last input and model",
    "pytorch-amp": "eager, channels-last, bfloat16 autocast",
  }[variant]
  where = f"on {torch.cuda.get_device_name(device)}" if device.type == "cuda" else f"{torch.get_num_threads()} threads"
  info = {"settings": f"{settings}, {where}", "version": torch.__version__}
  return info, epoch


def keras_worker(data, batch_size: int, variant: str) -> tuple[dict[str, Any], EpochFn]:
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  import tensorflow as tf

  tf.random.set_seed(0)
  keras = tf.keras
  config = seed_config(batch_size)
  model_config = config.model
  layers = [keras.Input(data.image_shape)]
  for filters, kernel, pool in _layers(model_config):
    layers.append(keras.layers.Conv2D(filters, kernel, activation="relu"))
    if pool > 1:
      layers.append(keras.layers.MaxPooling2D(pool))
  layers.append(keras.layers.Flatten())
  layers += [keras.layers.Dense(features, activation="relu") for features in model_config.dense_features]
  model = keras.Sequential([*layers, keras.layers.Dense(data.num_classes)])
  model.compile(
    optimizer=keras.optimizers.Adam(config.learning_rate),
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    metrics=["accuracy"],
    jit_compile=variant == "keras-xla",
  )
  x_train, y_train = data.train_images.astype(np.float32) / 255.0, data.train_labels
  x_test, y_test = data.test_images.astype(np.float32) / 255.0, data.test_labels

  def epoch(index: int) -> dict[str, float]:
    start = time.perf_counter()
    history = model.fit(x_train, y_train, batch_size=batch_size, epochs=1, shuffle=True, verbose=0)
    seconds = time.perf_counter() - start
    _, accuracy = model.evaluate(x_test, y_test, batch_size=500, verbose=0)
    return {"epoch_seconds": seconds, "train_loss": float(history.history["loss"][-1]),
            "test_accuracy": float(accuracy)}  # fmt: skip

  onednn = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on for x86 Linux)")
  xla = "XLA-compiled train step (jit_compile=True)" if variant == "keras-xla" else "no XLA (jit_compile=False)"
  return {"settings": f"model.fit, {xla}, TF_ENABLE_ONEDNN_OPTS={onednn}", "version": tf.__version__}, epoch


WORKERS = {"convnet": convnet_worker, "pytorch": pytorch_worker, "keras": keras_worker}


def _serve(name: str, data_config: Mapping[str, Any], batch_size: int, connection) -> None:
  """A worker process: set up, report, then one epoch per request until told to stop."""
  if name == "convnet":
    runtime.configure_xla()  # a fresh (spawned) process: before its JAX backend starts
  try:
    data = input_pipeline.get_datasets(data_config)
    start = time.perf_counter()
    info, epoch = WORKERS[family(name)](data, batch_size, name)
    info.update(setup_seconds=time.perf_counter() - start, num_train=len(data.train_labels),
                image_shape=data.image_shape, num_classes=data.num_classes)  # fmt: skip
    connection.send(("ready", info))
    while (request := connection.recv()) is not None:
      connection.send(("epoch", epoch(request)))
  except Exception as e:  # noqa: BLE001 - reported to the coordinator, which carries on without it
    connection.send(("error", f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"))


def run_alternating(
  impls: Sequence[str], epochs: int, batch_size: int, data_config: Mapping[str, Any], say: Callable[[str], None]
) -> tuple[dict[str, list[dict[str, float]]], dict[str, dict[str, Any]]]:
  """Alternating epochs of each implementation: (epoch results by implementation, set-up info)."""
  context = multiprocessing.get_context("spawn")
  workers = {}
  for name in impls:
    module = PEER_MODULES.get(family(name))
    if module is not None and importlib.util.find_spec(module) is None:
      say(f'note: {name} skipped: {module} is not installed (pip install -e ".[bench]")')
      continue
    parent, child = context.Pipe()
    process = context.Process(target=_serve, args=(name, dict(data_config), batch_size, child), daemon=True)
    process.start()
    workers[name] = (process, parent)
  infos, results = {}, {name: [] for name in workers}
  for name, (process, connection) in list(workers.items()):  # set-up one at a time, too
    kind, payload = connection.recv()
    if kind == "error":
      say(f"note: {name} skipped: {payload}")
      del workers[name], results[name]
      process.kill()
      continue
    infos[name] = payload
    say(f"{name}: ready ({payload})")
  for epoch in range(1, epochs + 1):
    for name, (_, connection) in workers.items():
      connection.send(epoch)
      kind, payload = connection.recv()
      if kind == "error":
        raise RuntimeError(f"{name} failed in epoch {epoch}: {payload}")
      results[name].append(payload)
      say(f"epoch {epoch} {name:16s} {payload['epoch_seconds']:7.2f} s  test acc {100 * payload['test_accuracy']:.2f}%")
  for process, connection in workers.values():
    connection.send(None)
    process.join(timeout=30)
  return results, infos
