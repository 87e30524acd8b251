"""Pictures of a trained run: layer activations and the first layer's learned filters.

    python -m convnet.visualize --plot=activations --workdir=runs/default --images=0,23,28 --filter=1 --out=act.png
    python -m convnet.visualize --plot=filters --workdir=runs/default --out=filters.png

``--images`` defaults to the first three test images of test image 0's class, as in the course. For a
notebook::

    from convnet import visualize
    run = visualize.load_run("runs/default")                     # config, model, params, test data
    outputs = visualize.layer_outputs(run.model, run.params, run.data.test_images[[0, 23, 28]])
    figure = visualize.activation_figure(run, [0, 23, 28], filter_index=1)

Figures are matplotlib ``Figure`` objects (no global pyplot state).
"""

from collections.abc import Mapping, Sequence
import dataclasses
from pathlib import Path
from typing import Any

from absl import flags
import jax.numpy as jnp
import numpy as np

from convnet import cli, configuration, models, trained
from convnet.errors import ConfigError, DataError
from convnet.results import plots
from convnet.sweep import store

PLOTS = ("activations", "filters")


@dataclasses.dataclass(frozen=True)
class Run(trained.Network):
  """A trained run's network (``trained.Network``) with its layers' shapes."""

  specs: tuple[models.LayerSpec, ...] = ()


def load_run(workdir: str | Path) -> Run:
  """A trained run: its config.json, its last checkpoint's parameters and its test data."""

  workdir = Path(workdir)
  if not workdir.is_dir():
    raise DataError(f"{workdir}: workdir not found; train a run there first (python -m convnet.main ...)")
  if trained.is_sweep(workdir):
    trials = sorted(path for path in (workdir / store.TRIALS_DIR).glob("*") if path.is_dir())
    if not trials:
      where = workdir / store.TRIALS_DIR
      raise DataError(
        f"{workdir} is a sweep directory with no trials yet; run the sweep, then give one of {where}/NAME"
      )
    shown = ", ".join(str(path) for path in trials[:5]) + (", ..." if len(trials) > 5 else "")
    raise DataError(f"{workdir} is a sweep directory; give one of its trials: {shown} ({len(trials)} in all)")
  net = trained.load(workdir)
  specs = models.layer_specs(configuration.model_kwargs(net.config, net.data.num_classes), net.image_shape)
  return Run(**{f.name: getattr(net, f.name) for f in dataclasses.fields(net)}, specs=tuple(specs))


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


def define_flags(values: flags.FlagValues) -> None:
  flags.DEFINE_enum("plot", None, PLOTS, "What to draw.", flag_values=values)
  flags.DEFINE_string("workdir", None, "A trained run's workdir (config.json + checkpoints).", flag_values=values)
  flags.DEFINE_list("images", None, "Test image indices, e.g. 0,23,28 (default: three of image 0's class).",
                    flag_values=values)  # fmt: skip
  flags.DEFINE_integer("filter", 1, "Which filter of each conv/pool layer to show.", flag_values=values)
  flags.DEFINE_string("out", None, "Output PNG path.", flag_values=values)
  flags.mark_flags_as_required(["plot", "workdir", "out"], flag_values=values)


def main(values: flags.FlagValues) -> None:
  run = load_run(values.workdir)
  if values.plot == "activations":
    try:
      indices = [int(i) for i in values.images] if values.images else default_images(run.data.test_labels)
    except ValueError:
      cli.fail(f"--images={','.join(values.images)} must be comma-separated integers")
    figure = activation_figure(run, indices, values.filter)
  else:
    figure = filters_figure(run)
  Path(values.out).parent.mkdir(parents=True, exist_ok=True)
  figure.savefig(values.out)
  print(f"wrote {values.out}")


if __name__ == "__main__":
  cli.run(main, define_flags)
