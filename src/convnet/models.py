"""The conv/pool/dense classifier, built from ``config.model``, and its shape arithmetic.

``ConvNet(**config.model)`` is a Flax linen module: for each entry of ``features`` a convolution
(``kernel_size``, ``padding``) with ReLU, then a ``pool_size`` max pool (1 = no pooling), then the
flattened map through ``dense_features`` ReLU layers to ``num_classes`` logits. The defaults are the
seed network of the TensorFlow course: 26x26x64 -> 13x13x64 -> 11x11x64 -> 5x5x64 -> 1600 -> 128 -> 10,
243,786 parameters.

:func:`layer_specs` computes every layer's output shape, parameter count and FLOPs from the config
alone; it is the shape check that runs before any training, and the data behind ``convnet.model_table``.
FLOPs count a multiply-add as 2 and leave out bias adds, ReLU and pooling comparisons.
"""

from collections.abc import Mapping, Sequence
import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from convnet import ops, runtime
from convnet.errors import ConfigError

OPS = ("auto", "fast", "flax")  # 'auto': 'fast' on the CPU, 'flax' (cuDNN / TPU convolutions) elsewhere
PADDINGS = ("VALID", "SAME")
DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class LayerSpec:
  name: str  # also the key of the layer's activation in the 'intermediates' collection
  kind: str  # Conv2D, MaxPool2D, Flatten, Dense
  output_shape: tuple[int, ...]  # per example, without the batch axis
  params: int
  flops: int  # forward FLOPs of the layer as defined (what Keras would compute)
  executed_flops: int = -1  # what ConvNet computes in training (less where it crops or fuses); -1: same as flops
  implementation: str = ""  # conv layers: what computes it in training (see layer_ops)

  def __post_init__(self):
    if self.executed_flops < 0:
      object.__setattr__(self, "executed_flops", self.flops)


def _sequence(name: str, value: Any, example: str) -> tuple[Any, ...]:
  if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
    raise ConfigError(f"model.{name}={value!r} is not allowed; use a tuple of ints, e.g. {example}")
  return tuple(value)


def _per_layer(name: str, value: Any, num_layers: int) -> tuple[int, ...]:
  if isinstance(value, int):
    return (value,) * num_layers
  values = _sequence(name, value, "3 or (5, 3)")
  if len(values) != num_layers:
    raise ConfigError(
      f"model.{name}={values} has {len(values)} entries but model.features has {num_layers} "
      f"conv layers; give one int or one entry per conv layer"
    )
  return values


def _check_ints(name: str, values: Sequence[Any], minimum: int) -> None:
  for v in values:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
      raise ConfigError(f"model.{name}={tuple(values)} is not allowed: each entry must be an int >= {minimum}")


def resolve_ops() -> str:
  """What ``ops='auto'`` means on this process's backend: convnet.ops on the CPU (its hand-written
  gradients avoid XLA:CPU's slow paths), the standard lax/Flax layers on GPU and TPU (cuDNN's and
  the TPU's own convolutions and pooling; the CPU ops' col2im gradient would materialise a 9-25x
  larger tensor there). A process whose backend has not started (a Ray sweep's driver, checking shapes)
  answers from the platform it would start (``runtime.expects_cpu``) rather than start one it will not use."""
  if not runtime.backend_started():
    return "fast" if runtime.expects_cpu() else "flax"
  return "fast" if jax.default_backend() == "cpu" else "flax"


def normalized(model_config: Mapping[str, Any]) -> dict[str, Any]:
  """Checks the model config's values (not yet the shapes) and expands per-layer ints to tuples."""
  cfg = dict(model_config)
  known = {f.name for f in dataclasses.fields(ConvNet) if f.name not in ("parent", "name")}
  unknown = sorted(set(cfg) - known)
  if unknown:
    raise ConfigError(f"unknown model field(s) {unknown}; allowed: {sorted(known)}")
  features = _sequence("features", cfg.get("features", ConvNet.features), "(64, 64)")
  _check_ints("features", features, 1)
  cfg["features"] = features
  cfg["kernel_size"] = _per_layer("kernel_size", cfg.get("kernel_size", ConvNet.kernel_size), len(features))
  _check_ints("kernel_size", cfg["kernel_size"], 1)
  cfg["pool_size"] = _per_layer("pool_size", cfg.get("pool_size", ConvNet.pool_size), len(features))
  _check_ints("pool_size", cfg["pool_size"], 1)
  cfg["dense_features"] = _sequence("dense_features", cfg.get("dense_features", ConvNet.dense_features), "(128,)")
  _check_ints("dense_features", cfg["dense_features"], 1)
  if cfg.get("num_classes") is None:  # None in a config: taken from the data (configuration.model_kwargs)
    cfg["num_classes"] = ConvNet.num_classes
  _check_ints("num_classes", (cfg["num_classes"],), 2)
  padding = str(cfg.get("padding", ConvNet.padding)).upper()
  if padding not in PADDINGS:
    raise ConfigError(f"model.padding={cfg.get('padding')!r} is not allowed; use one of {PADDINGS}")
  cfg["padding"] = padding
  cfg["dtype"] = cfg.get("dtype", ConvNet.dtype)
  if cfg["dtype"] not in DTYPES:
    raise ConfigError(f"model.dtype={cfg['dtype']!r} is not allowed; use one of {DTYPES}")
  cfg["crop_to_pool"] = bool(cfg.get("crop_to_pool", ConvNet.crop_to_pool))
  cfg["fuse_max_channels"] = cfg.get("fuse_max_channels", ConvNet.fuse_max_channels)
  _check_ints("fuse_max_channels", (cfg["fuse_max_channels"],), 0)
  cfg["ops"] = cfg.get("ops", ConvNet.ops)
  if cfg["ops"] not in OPS:
    raise ConfigError(f"model.ops={cfg.get('ops')!r} is not allowed; use one of {OPS}")
  if cfg["ops"] == "auto":
    cfg["ops"] = resolve_ops()
  return cfg


def _crops_to_pool(cfg: Mapping[str, Any], pool: int) -> bool:
  """Whether a conv is computed only over the rows/columns its pool keeps (see ConvNet.crop_to_pool)."""
  return cfg["crop_to_pool"] and cfg["padding"] == "VALID" and pool > 1


def _fuses(cfg: Mapping[str, Any], in_channels: int) -> bool:
  """Whether a conv layer runs as one ops.conv_relu_pool (see ConvNet.fuse_max_channels)."""
  return cfg["ops"] == "fast" and in_channels <= cfg["fuse_max_channels"]


def layer_specs(model_config: Mapping[str, Any], input_shape: Sequence[int]) -> list[LayerSpec]:
  """Output shape, parameters and FLOPs per layer; raises ConfigError if a map shrinks too far."""
  cfg = normalized(model_config)
  height, width, channels = (int(d) for d in input_shape)
  specs = []
  for i, (features, kernel, pool) in enumerate(zip(cfg["features"], cfg["kernel_size"], cfg["pool_size"], strict=True)):
    if cfg["padding"] == "VALID":
      if height < kernel or width < kernel:
        raise ConfigError(
          f"conv{i}: a {kernel}x{kernel} kernel does not fit its {height}x{width} input "
          f"(VALID padding); use fewer conv layers, smaller kernels or less pooling"
        )
      height, width = height - kernel + 1, width - kernel + 1
    params = kernel * kernel * channels * features + features
    flops = 2 * kernel * kernel * channels * features * height * width
    executed = flops
    if (_crops_to_pool(cfg, pool) or _fuses(cfg, channels)) and height >= pool and width >= pool:
      executed = 2 * kernel * kernel * channels * features * (height // pool * pool) * (width // pool * pool)
    if cfg["ops"] == "flax":
      implementation = "flax nn.Conv" + (" + nn.max_pool" if pool > 1 else "")
    elif _fuses(cfg, channels):
      implementation = "ops.conv_relu_pool (conv + ReLU + pool fused)"
    else:
      cropped = " cropped to its pool" if _crops_to_pool(cfg, pool) else ""
      implementation = f"ops.conv2d{cropped}" + (" + ops.max_pool" if pool > 1 else "")
    specs.append(LayerSpec(f"conv{i}", "Conv2D", (height, width, features), params, flops, executed, implementation))
    channels = features
    if pool > 1:
      if height < pool or width < pool:
        raise ConfigError(
          f"pool{i}: a {pool}x{pool} pool does not fit its {height}x{width} input; "
          f"use fewer conv layers, smaller kernels or less pooling"
        )
      height, width = height // pool, width // pool
      specs.append(LayerSpec(f"pool{i}", "MaxPool2D", (height, width, channels), 0, 0))
  size = height * width * channels
  specs.append(LayerSpec("flatten", "Flatten", (size,), 0, 0))
  dense = (*cfg["dense_features"], cfg["num_classes"])
  names = [f"dense{j}" for j in range(len(cfg["dense_features"]))] + ["logits"]
  for name, features in zip(names, dense, strict=True):
    specs.append(LayerSpec(name, "Dense", (features,), size * features + features, 2 * size * features))
    size = features
  return specs


def layer_ops(specs: Sequence[LayerSpec]) -> dict[str, str]:
  """What computes each conv layer in training, e.g. ``{'conv0': 'ops.conv_relu_pool (...)', ...}``."""
  return {s.name: s.implementation for s in specs if s.implementation}


class Conv2D(nn.Module):
  """A stride-1 convolution on :func:`convnet.ops.conv2d`; same parameters and init as ``nn.Conv``."""

  features: int
  kernel_size: int
  padding: str = "VALID"
  dtype: Any = jnp.float32  # computation dtype; parameters stay float32

  @nn.compact
  def __call__(self, x: jax.Array, relu_pool: int | None = None) -> jax.Array:
    """conv(x) + bias; with ``relu_pool=p``, ``max_pool(relu(conv(x) + bias), p)`` by :func:`ops.conv_relu_pool`."""
    kernel = self.param(
      "kernel",
      nn.initializers.lecun_normal(),
      (self.kernel_size, self.kernel_size, x.shape[-1], self.features),
    )
    bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
    x, kernel, bias = (a.astype(self.dtype) for a in (x, kernel, bias))
    if relu_pool is not None:
      return ops.conv_relu_pool(x, kernel, bias, relu_pool, self.padding)
    return ops.conv2d(x, kernel, self.padding) + bias.reshape(1, 1, 1, -1)


class ConvNet(nn.Module):
  """Conv(+ReLU, +max pool) blocks, then dense ReLU layers, then logits.

  Integer images (uint8) are scaled to [0, 1] inside the module, so the scaling happens in the
  compiled step; floating-point images are used as given. Each conv, pool and flatten output is
  sown into the 'intermediates' collection under its :class:`LayerSpec` name (``conv0``, ``pool0``,
  ``flatten``); the parameters live under ``Conv_<i>`` and ``Dense_<j>``, the logits layer last.
  ``ops='flax'`` uses ``nn.Conv``/``nn.max_pool`` instead of :mod:`convnet.ops` (same parameters),
  the reference for the fast path and the right ops on GPU and TPU; ``ops='auto'`` (the default)
  picks per backend (:func:`resolve_ops`). Collecting 'intermediates' (``mutable=['intermediates']``)
  runs every layer unfused, so that each conv map can be sown; the logits are the same.
  """

  features: Sequence[int] = (64, 64)
  kernel_size: int | Sequence[int] = 3
  padding: str = "VALID"
  pool_size: int | Sequence[int] = 2
  dense_features: Sequence[int] = (128,)
  num_classes: int = 10
  ops: str = "auto"
  # Compute a VALID conv only over the rows/columns its max pool keeps (the pool drops the rest):
  # the same logits and gradients with less work, e.g. 10x10 instead of 11x11 outputs in the seed's
  # second conv (-17% of its FLOPs). The sown conv activation then has the cropped size;
  # convnet.visualize turns this off to show the full maps. Reported shapes and FLOPs stay nominal.
  crop_to_pool: bool = True
  # Conv layers with at most this many input channels (the first layer of a grayscale or RGB network)
  # run as one ops.conv_relu_pool (conv + ReLU + pool, the full-size map never stored; only the
  # pooled windows computed) whenever activations are not being collected. 0 = never. Measured
  # 1.19x-1.95x faster per training step over the sweep grid (experiments/benchmarks).
  fuse_max_channels: int = 4
  # Computation dtype: 'float32', or 'bfloat16' for large batches on GPU/TPU (parameters, the loss and
  # the optimizer stay float32; logits are returned as float32). No gain on CPUs without native bf16.
  dtype: str = "float32"

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    cfg = normalized(
      {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("parent", "name")}
    )
    dtype = jnp.dtype(cfg["dtype"])
    x = images
    if jnp.issubdtype(x.dtype, jnp.integer):
      x = x.astype(jnp.float32) / 255.0
    if x.ndim == 3:  # a batch of single-channel images without the channel axis
      x = x[..., None]
    for i, (features, kernel, pool) in enumerate(
      zip(cfg["features"], cfg["kernel_size"], cfg["pool_size"], strict=True)
    ):
      if _fuses(cfg, x.shape[-1]) and not self.is_mutable_collection("intermediates"):
        x = Conv2D(features, kernel, cfg["padding"], dtype=dtype, name=f"Conv_{i}")(x, relu_pool=pool)
        continue
      if _crops_to_pool(cfg, pool):
        kept_h = (x.shape[1] - kernel + 1) // pool * pool
        kept_w = (x.shape[2] - kernel + 1) // pool * pool
        x = x[:, : kept_h + kernel - 1, : kept_w + kernel - 1, :]
      if cfg["ops"] == "fast":
        x = Conv2D(features, kernel, cfg["padding"], dtype=dtype, name=f"Conv_{i}")(x)
      else:
        x = nn.Conv(features, (kernel, kernel), padding=cfg["padding"], dtype=dtype, name=f"Conv_{i}")(x)
      x = nn.relu(x)
      self.sow("intermediates", f"conv{i}", x)
      if pool > 1:
        if cfg["ops"] == "fast":
          x = ops.max_pool(x, pool)
        else:
          x = nn.max_pool(x, (pool, pool), strides=(pool, pool))
        self.sow("intermediates", f"pool{i}", x)
    x = x.reshape(x.shape[0], -1)
    self.sow("intermediates", "flatten", x)
    for j, features in enumerate(cfg["dense_features"]):
      x = nn.relu(nn.Dense(features, dtype=dtype, name=f"Dense_{j}")(x))
    logits = nn.Dense(cfg["num_classes"], dtype=dtype, name=f"Dense_{len(cfg['dense_features'])}")(x)
    return logits.astype(jnp.float32)


def count_params(params: Any) -> int:
  return sum(int(p.size) for p in jax.tree_util.tree_leaves(params))
