"""The course's convolution/pooling walkthrough on a real photograph; no trained model needed.

    python -m convnet.walkthrough --out=walkthrough/

Applies classic 3x3 filters (:data:`CLASSIC_FILTERS`) to a grayscale photo shipped with matplotlib,
using the model's own ``convnet.ops.conv2d`` and ``max_pool``; writes the original, each filtered
image and its 2x2 max-pooled version as PNGs, and prints the shape arithmetic. For a notebook::

    from convnet import walkthrough
    edges = walkthrough.filter_image(walkthrough.photo(), walkthrough.CLASSIC_FILTERS["edges"])
    pooled = walkthrough.pool_image(edges)
    figure = walkthrough.walkthrough_figure()
"""

from pathlib import Path

from absl import flags
import jax.numpy as jnp
import numpy as np

from convnet import cli, ops
from convnet.results import plots

# The course's 3x3 filters (its sidebar on convolutions), plus the Sobel pair.
CLASSIC_FILTERS = {
  "edges": np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], np.float32),
  "horizontal_lines": np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], np.float32),
  "vertical_lines": np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32),
  "outline": np.array([[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]], np.float32),
}


def define_flags(values: flags.FlagValues) -> None:
  flags.DEFINE_string("out", "walkthrough", "Output directory for the PNGs.", flag_values=values)
  flags.DEFINE_integer("pool", 2, "Max-pooling window.", flag_values=values)


def save_gray(path: Path, image: np.ndarray) -> None:
  """Saves a 2-D array as a grayscale PNG of exactly its size (0 black, 255 white)."""
  import matplotlib.image

  matplotlib.image.imsave(path, np.clip(image, 0, 255), cmap="gray", vmin=0, vmax=255)


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


def main(values: flags.FlagValues) -> None:
  out, pool = Path(values.out), values.pool
  if pool < 1:
    cli.fail(f"--pool={pool} is not allowed; use a window of 1 or more pixels")
  out.mkdir(parents=True, exist_ok=True)
  image = photo()
  height, width = image.shape
  save_gray(out / "original.png", image)
  print(f"original: {height} x {width} (grayscale photo shipped with matplotlib) -> {out / 'original.png'}")
  for name, kernel in CLASSIC_FILTERS.items():
    k = kernel.shape[0]
    filtered = filter_image(image, kernel)
    pooled = pool_image(filtered, pool)
    save_gray(out / f"{name}.png", filtered)
    save_gray(out / f"{name}_pooled.png", pooled)
    print(
      f"{name:17s} {k}x{k} filter: {height} x {width} -> ({height}-{k}+1) x ({width}-{k}+1) = "
      f"{filtered.shape[0]} x {filtered.shape[1]} -> {pool}x{pool} max pool -> "
      f"{pooled.shape[0]} x {pooled.shape[1]}  ({filtered.size:,} -> {pooled.size:,} values)"
    )
  print(f"wrote {1 + 2 * len(CLASSIC_FILTERS)} PNGs to {out}/")


if __name__ == "__main__":
  cli.run(main, define_flags)
