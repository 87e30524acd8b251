"""Inference: a trained network's forward pass, and its speed measured like a benchmark.

:func:`forward` is the compiled forward pass (images -> logits) that every inference path uses: the
speed measurement, ``convnet.predict`` and ``convnet.export``. :func:`measure` times it on one device
after training (``config.inference``; every completed trial records it in ``summary.json`` and its
result line):

* ``latency_ms`` / ``latency_p90_ms``: one image per call (batch 1), the median and 90th percentile
  of the calls' wall times, each call waited on (``block_until_ready``); compilation and
  ``WARMUP_CALLS`` calls excluded;
* ``throughput``: images per second at ``config.inference.batch_size`` images per call (its median
  call);
* ``inference_device`` and ``inference_machine`` (where), ``inference_calls`` (how many calls each figure is over) and
  ``inference_seconds`` (what measuring cost, compilation included).

Each figure takes calls for about half of ``config.inference.seconds`` (at least ``MIN_CALLS``, at
most ``MAX_CALLS``); ``seconds=0`` measures nothing. The images are random pixels: the network's cost
does not depend on their values.
"""

from collections.abc import Mapping
import functools
import os
import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from convnet import models, numerics
from convnet.errors import ConfigError
from convnet.rundir import provenance

WARMUP_CALLS = 3
MIN_CALLS = 5
MAX_CALLS = 2000
FIELDS = ("latency_ms", "latency_p90_ms", "throughput", "throughput_batch", "inference_device", "inference_machine",
          "inference_calls", "inference_seconds")  # fmt: skip


def check_settings(config: Mapping[str, Any]) -> dict[str, Any]:
  """``config.inference`` with its defaults; ConfigError naming a bad value and what is allowed."""
  settings = {"seconds": 1.0, "batch_size": 1024, **dict(config.get("inference") or {})}
  seconds, batch = settings["seconds"], settings["batch_size"]
  if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds < float("inf"):
    raise ConfigError(f"inference.seconds={seconds!r}: give seconds >= 0 (0: not measured), e.g. 1.0")
  if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
    raise ConfigError(f"inference.batch_size={batch!r}: give a number of images >= 1, e.g. 1024")
  return settings


@functools.cache
def forward(model: models.ConvNet):
  """``model``'s compiled forward pass: ``(params, images) -> logits``, images NHWC (uint8 pixels, or
  floats in [0, 1]). One per architecture, so that every trial of one shares its compilations."""
  return jax.jit(lambda params, images: model.apply({"params": params}, images))


def logits(model: models.ConvNet, params: Any, images: np.ndarray, batch_size: int = 1024) -> np.ndarray:
  """``model``'s logits for ``images`` (N, H, W, C), ``batch_size`` images per call."""
  apply = forward(model)
  parts = [
    np.asarray(apply(params, jnp.asarray(images[i : i + batch_size]))) for i in range(0, len(images), batch_size)
  ]
  return np.concatenate(parts) if parts else np.zeros((0, model.num_classes), np.float32)


def param_bytes(params: Any) -> int:
  """The parameters' size in bytes (float32: 4 per parameter)."""
  return sum(int(leaf.size) * leaf.dtype.itemsize for leaf in jax.tree.leaves(params))


def _local_copy(value: Any) -> Any:
  """This process's copy of a replicated array (a run over many processes spans devices it cannot address)."""
  if isinstance(value, jax.Array) and not value.is_fully_addressable:
    return value.addressable_data(0)
  return value


def _timed_calls(call, budget: float) -> list[float]:
  """Wall seconds of calls to ``call`` (each waited on) for about ``budget`` seconds, after the warm-up."""
  for _ in range(WARMUP_CALLS):
    jax.block_until_ready(call())
  times: list[float] = []
  spent = 0.0
  while len(times) < MAX_CALLS and (len(times) < MIN_CALLS or spent < budget):
    start = time.perf_counter()
    jax.block_until_ready(call())
    times.append(time.perf_counter() - start)
    spent += times[-1]
  return times


def measure(
  model: models.ConvNet, params: Any, image_shape, config: Mapping[str, Any], device: jax.Device | None = None
) -> dict[str, Any]:
  """Batch-1 latency and large-batch throughput of ``model`` with ``params`` on ``device`` (default: this
  process's first device), as the fields of :data:`FIELDS`; ``{}`` when ``config.inference.seconds`` is 0."""
  settings = check_settings(config)
  if not settings["seconds"]:
    return {}
  start = time.perf_counter()
  device = device or jax.local_devices()[0]
  params = jax.device_put(jax.tree.map(_local_copy, params), device)
  rng = np.random.default_rng(0)
  one, many = (jax.device_put(rng.integers(0, 256, (n, *image_shape), dtype=np.uint8), device)
               for n in (1, settings["batch_size"]))  # fmt: skip
  apply = forward(model)  # its compilations are cached: the warm-up compiles once per architecture and shape
  budget = settings["seconds"] / 2
  with numerics.matmul_precision(config):
    latency = _timed_calls(lambda: apply(params, one), budget)
    batches = _timed_calls(lambda: apply(params, many), budget)
  return {
    "latency_ms": 1e3 * statistics.median(latency),
    "latency_p90_ms": 1e3 * float(np.percentile(latency, 90)),
    "throughput": len(many) / statistics.median(batches),
    "throughput_batch": len(many),
    "inference_device": f"{device.platform}:{device.device_kind}",
    "inference_machine": f"{provenance.cpu_name()}, {os.cpu_count()} cores",
    "inference_calls": {"latency": len(latency), "throughput": len(batches)},
    "inference_seconds": time.perf_counter() - start,
  }
