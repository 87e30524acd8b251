"""Seeing inside the network: layer outputs, learned filters, and the convolution/pooling walkthrough.

For a notebook::

    from convnet import inspect
    run = inspect.load_run("runs/default")                       # config, model, params, test data
    outputs = inspect.layer_outputs(run.model, run.params, run.data.test_images[[0, 23, 28]])
    figure = inspect.activation_figure(run, [0, 23, 28], filter_index=1)
    edges = inspect.filter_image(inspect.photo(), inspect.CLASSIC_FILTERS["edges"])
    pooled = inspect.pool_image(edges)

Every convolution and pooling here is ``convnet.ops.conv2d`` / ``convnet.ops.max_pool``, the same
functions the model trains with. Figures are matplotlib ``Figure`` objects (no global pyplot state).
"""

from collections.abc import Mapping, Sequence
import dataclasses
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from convnet import checkpoints, configuration, input_pipeline, logs, models, ops, plots, steps
from convnet.errors import ConfigError, DataError

# The course's 3x3 filters (its sidebar on convolutions), plus the Sobel pair.
CLASSIC_FILTERS = {
  "edges": np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], np.float32),
  "horizontal_lines": np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], np.float32),
  "vertical_lines": np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32),
  "outline": np.array([[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]], np.float32),
}


@dataclasses.dataclass(frozen=True)
class Run:
  workdir: Path
  config: dict[str, Any]
  model: models.ConvNet
  params: Any
  epoch: int
  data: input_pipeline.Dataset
  specs: list[models.LayerSpec]


def load_run(workdir: str | Path) -> Run:
  """A trained run: its config.json, its last checkpoint's parameters and its test data."""

  workdir = Path(workdir)
  if not workdir.is_dir():
    raise DataError(f"{workdir}: workdir not found; train a run there first (python -m convnet.main ...)")
  config = logs.read_json(workdir / logs.CONFIG_FILE)
  if config is None:
    raise DataError(f"{workdir / logs.CONFIG_FILE}: not found; {workdir} is not a convnet run")
  data = input_pipeline.get_datasets(config["dataset"])
  kwargs = configuration.model_kwargs(config, data.num_classes)
  target = steps.create_train_state(jax.random.PRNGKey(0), config, data.image_shape, data.num_classes)
  state, epoch = checkpoints.restore(workdir, target)
  specs = models.layer_specs(kwargs, data.image_shape)
  return Run(workdir, config, models.ConvNet(**kwargs), state.params, epoch, data, specs)


def layer_outputs(model: models.ConvNet, params: Any, images: np.ndarray) -> dict[str, np.ndarray]:
  """Each conv, pool and flatten layer's output for ``images`` (N, H, W, C), in layer order (full maps)."""
  model = model.clone(crop_to_pool=False)  # show the rows/columns the pools drop, too
  _, state = model.apply({"params": params}, jnp.asarray(images), mutable=["intermediates"])
  return {name: np.asarray(value[0]) for name, value in state["intermediates"].items()}


def default_images(labels: np.ndarray, count: int = 3) -> list[int]:
  """The first ``count`` test images of test image 0's class (the course shows three of a kind)."""
  return [int(i) for i in np.flatnonzero(labels == labels[0])[:count]]


def check_indices(run: Run, image_indices: Sequence[int], filter_index: int) -> None:
  num_images = len(run.data.test_labels)
  for i in image_indices:
    if not 0 <= i < num_images:
      raise ConfigError(f"image index {i} is out of range; the test set has images 0..{num_images - 1}")
  smallest = min(s.output_shape[-1] for s in run.specs if s.kind in ("Conv2D", "MaxPool2D"))
  if not 0 <= filter_index < smallest:
    raise ConfigError(f"filter {filter_index} is out of range; this model's conv layers have filters 0..{smallest - 1}")


def activation_figure(run: Run, image_indices: Sequence[int], filter_index: int = 1):
  """Rows: the images (with class names); columns: the input, then each conv/pool map of one filter."""
  check_indices(run, image_indices, filter_index)
  outputs = layer_outputs(run.model, run.params, run.data.test_images[list(image_indices)])
  maps = [(name, value) for name, value in outputs.items() if value.ndim == 4]
  figure = plots.figure(1.6 * (len(maps) + 1), 1.7 * len(image_indices), dpi=100)
  axes = figure.subplots(len(image_indices), len(maps) + 1, squeeze=False)
  for row, index in enumerate(image_indices):
    label = run.data.class_names[run.data.test_labels[index]]
    axes[row, 0].imshow(run.data.test_images[index, :, :, 0], cmap="gray")
    axes[row, 0].set_ylabel(f"#{index}\n{label}", fontsize=8)
    for col, (name, value) in enumerate(maps, start=1):
      axes[row, col].imshow(value[row, :, :, filter_index], cmap="inferno")
      if row == 0:
        axes[row, col].set_title(f"{name}\n{value.shape[1]}x{value.shape[2]}", fontsize=8)
  axes[0, 0].set_title("input", fontsize=8)
  for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
  figure.suptitle(
    f"filter {filter_index} through each conv and pool layer ({run.workdir.name}, epoch {run.epoch})", fontsize=9
  )
  figure.tight_layout()
  return figure


def first_layer_kernels(params: Mapping[str, Any]) -> np.ndarray:
  """The first conv layer's kernels, (kh, kw, in_channels, filters)."""
  return np.asarray(params["Conv_0"]["kernel"])


def filters_figure(run: Run):
  """The first conv layer's learned kernels as a grid of small images (channel-averaged)."""
  kernels = first_layer_kernels(run.params).mean(axis=2)
  count = kernels.shape[-1]
  columns = int(np.ceil(np.sqrt(count)))
  rows = int(np.ceil(count / columns))
  figure = plots.figure(columns * 0.9, rows * 0.9 + 0.5, dpi=100)
  axes = figure.subplots(rows, columns, squeeze=False)
  limit = float(np.abs(kernels).max()) or 1.0
  for i, ax in enumerate(axes.flat):
    ax.set_xticks([])
    ax.set_yticks([])
    if i < count:
      ax.imshow(kernels[:, :, i], cmap="RdBu_r", vmin=-limit, vmax=limit)
      ax.set_title(str(i), fontsize=6, pad=1)
    else:
      ax.axis("off")
  figure.suptitle(f"conv0 kernels {kernels.shape[0]}x{kernels.shape[1]} (red +, blue -), epoch {run.epoch}", fontsize=8)
  figure.tight_layout()
  return figure


def photo() -> np.ndarray:
  """A real grayscale photograph shipped with matplotlib (Grace Hopper, 600x512), as float32 in [0, 255]."""
  import matplotlib.cbook
  import matplotlib.image

  rgb = matplotlib.image.imread(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
  return (rgb[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).astype(np.float32)


def filter_image(image: np.ndarray, kernel: np.ndarray, clip: bool = True) -> np.ndarray:
  """A 2-D image convolved (VALID, like the model) with a 2-D kernel; clipped to [0, 255] as in the course."""
  image = np.asarray(image, np.float32)
  kernel = np.asarray(kernel, np.float32)
  if image.ndim != 2 or kernel.ndim != 2:
    raise ValueError(f"filter_image needs a 2-D image and kernel; got {image.shape} and {kernel.shape}")
  out = np.asarray(ops.conv2d(jnp.asarray(image)[None, :, :, None], jnp.asarray(kernel)[:, :, None, None]))[0, :, :, 0]
  return np.clip(out, 0, 255) if clip else out


def pool_image(image: np.ndarray, size: int = 2) -> np.ndarray:
  """A 2-D image max-pooled in size x size windows (the model's pooling)."""
  return np.asarray(ops.max_pool(jnp.asarray(image, jnp.float32)[None, :, :, None], size))[0, :, :, 0]


def walkthrough_figure(pool: int = 2):
  """The course's convolution sidebar in one figure: the photo, then each classic filter's output and
  its ``pool`` x ``pool`` max-pooled version, every panel titled with its shape."""
  image = photo()
  figure = plots.figure(2.4 * (1 + 2 * len(CLASSIC_FILTERS)) / 2, 5.0, dpi=90)
  axes = figure.subplots(2, 1 + len(CLASSIC_FILTERS), squeeze=False)
  axes[0, 0].imshow(image, cmap="gray", vmin=0, vmax=255)
  axes[0, 0].set_title(f"photo\n{image.shape[0]}x{image.shape[1]}", fontsize=8)
  axes[1, 0].axis("off")
  for col, (name, kernel) in enumerate(CLASSIC_FILTERS.items(), start=1):
    filtered = filter_image(image, kernel)
    pooled = pool_image(filtered, pool)
    axes[0, col].imshow(filtered, cmap="gray", vmin=0, vmax=255)
    axes[0, col].set_title(f"{name}\n{filtered.shape[0]}x{filtered.shape[1]}", fontsize=8)
    axes[1, col].imshow(pooled, cmap="gray", vmin=0, vmax=255)
    axes[1, col].set_title(f"{pool}x{pool} max pool\n{pooled.shape[0]}x{pooled.shape[1]}", fontsize=8)
  for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
  figure.tight_layout()
  return figure
