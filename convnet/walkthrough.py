"""The course's convolution/pooling walkthrough on a real photograph; no trained model needed.

    python -m convnet.walkthrough --out=walkthrough/

Applies classic 3x3 filters (``convnet.inspect.CLASSIC_FILTERS``) to a grayscale photo shipped with
matplotlib, using the model's own ``conv2d`` and ``max_pool``; writes the original, each filtered
image and its 2x2 max-pooled version as PNGs, and prints the shape arithmetic.
"""

from pathlib import Path

from absl import flags
import numpy as np

from convnet import cli


def define_flags(values: flags.FlagValues) -> None:
  flags.DEFINE_string("out", "walkthrough", "Output directory for the PNGs.", flag_values=values)
  flags.DEFINE_integer("pool", 2, "Max-pooling window.", flag_values=values)


def save_gray(path: Path, image: np.ndarray) -> None:
  """Saves a 2-D array as a grayscale PNG of exactly its size (0 black, 255 white)."""
  import matplotlib.image

  matplotlib.image.imsave(path, np.clip(image, 0, 255), cmap="gray", vmin=0, vmax=255)


def main(values: flags.FlagValues) -> None:
  from convnet import inspect

  out, pool = Path(values.out), values.pool
  if pool < 1:
    cli.fail(f"--pool={pool} is not allowed; use a window of 1 or more pixels")
  out.mkdir(parents=True, exist_ok=True)
  image = inspect.photo()
  height, width = image.shape
  save_gray(out / "original.png", image)
  print(f"original: {height} x {width} (grayscale photo shipped with matplotlib) -> {out / 'original.png'}")
  for name, kernel in inspect.CLASSIC_FILTERS.items():
    k = kernel.shape[0]
    filtered = inspect.filter_image(image, kernel)
    pooled = inspect.pool_image(filtered, pool)
    save_gray(out / f"{name}.png", filtered)
    save_gray(out / f"{name}_pooled.png", pooled)
    print(
      f"{name:17s} {k}x{k} filter: {height} x {width} -> ({height}-{k}+1) x ({width}-{k}+1) = "
      f"{filtered.shape[0]} x {filtered.shape[1]} -> {pool}x{pool} max pool -> "
      f"{pooled.shape[0]} x {pooled.shape[1]}  ({filtered.size:,} -> {pooled.size:,} values)"
    )
  print(f"wrote {1 + 2 * len(inspect.CLASSIC_FILTERS)} PNGs to {out}/")


if __name__ == "__main__":
  cli.run(main, define_flags)
