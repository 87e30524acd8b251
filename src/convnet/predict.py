"""Classify your own pictures with a trained network: each image's top classes and their probabilities.

    python -m convnet.predict --workdir=runs/default shoe.png bag.jpg
    python -m convnet.predict --workdir=runs/sweep --trial=features=64-64,kernel_size=3 shoe.png

``--workdir`` is a run, or a sweep directory: its sweet spot's trial (``answer.json``; the lowest
completed seed), or the trial or configuration ``--trial`` names (``convnet.trained.find``). The
network is its last checkpoint.

Any picture Pillow reads (PNG, JPEG, ...; colour or grey, any size) is brought to the look of the
training data (:func:`prepare`), the way Fashion-MNIST was made: grey; a light object on a dark
background, so a picture whose border is light on average (``--invert=auto``: mean border pixel above
128), such as a photo of a shoe on white, is inverted (``--invert=yes`` / ``no`` decide it yourself);
a picture of another size is trimmed to its object (the pixels lighter than the background by more
than ``OBJECT_CONTRAST``), fitted into the data's image size keeping its aspect ratio and centred on
its background. A picture of the data's size (e.g. one written from the test set) is used as it is,
inverted or not. A file that cannot be read is one line naming it (exit status 1), before anything
is classified.
"""

from collections.abc import Sequence
from pathlib import Path

from absl import flags
import numpy as np
from PIL import Image, UnidentifiedImageError

from convnet import cli, inference, trained
from convnet.errors import DataError

ARGUMENTS = "IMAGE..."  # the pictures, after the flags
INVERT = ("auto", "yes", "no")
BORDER = 0.1  # the border that decides the background: this share of the width and height on each side
OBJECT_CONTRAST = 32  # a pixel this much lighter than the background (0..255) is part of the object


def background(grey: np.ndarray) -> float:
  """The mean pixel (0..255) of ``grey``'s border: its outer :data:`BORDER` rows and columns."""
  h, w = grey.shape
  dy, dx = max(1, round(BORDER * h)), max(1, round(BORDER * w))
  mask = np.ones_like(grey, dtype=bool)
  mask[dy : h - dy, dx : w - dx] = False
  return float(grey[mask].mean())


def _object_box(grey: np.ndarray, fill: float) -> tuple[int, int, int, int]:
  """The bounding box (left, top, right, bottom) of the pixels lighter than the background ``fill`` by more
  than :data:`OBJECT_CONTRAST`: the object, as Fashion-MNIST's pictures were trimmed to theirs; the whole
  picture where nothing stands out."""
  rows, cols = np.nonzero(grey > fill + OBJECT_CONTRAST)
  if not len(rows):
    return 0, 0, grey.shape[1], grey.shape[0]
  return int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1


def prepare(path: str | Path, image_shape: Sequence[int], invert: str = "auto") -> tuple[np.ndarray, bool]:
  """The picture at ``path`` as the data's uint8 (H, W, C) image, and whether it was inverted; DataError
  naming the file if Pillow cannot read it."""
  height, width, channels = image_shape
  try:
    with Image.open(path) as opened:
      opened.load()
      picture = opened.convert("RGBA")
  except FileNotFoundError:
    raise DataError(f"{path}: no such file") from None
  except (OSError, UnidentifiedImageError, ValueError) as e:
    reason = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise DataError(f"{path}: not a picture Pillow can read ({reason})") from None
  white = Image.new("RGBA", picture.size, (255, 255, 255, 255))
  picture = Image.alpha_composite(white, picture)  # transparent parts count as a white background
  picture = picture.convert("L" if channels == 1 else "RGB")
  pixels = np.asarray(picture)
  grey = pixels if pixels.ndim == 2 else pixels.mean(axis=-1)
  flip = {"yes": True, "no": False}.get(invert, background(grey) > 128)
  if flip:
    pixels, grey = 255 - pixels, 255 - grey  # as it looks now: a light object on a dark background
  picture = Image.fromarray(pixels)
  if picture.size != (width, height):
    fill = round(background(grey))
    picture = picture.crop(_object_box(grey, fill))
    scale = min(width / picture.size[0], height / picture.size[1])
    size = (max(1, round(picture.size[0] * scale)), max(1, round(picture.size[1] * scale)))
    canvas = Image.new(picture.mode, (width, height), fill if channels == 1 else (fill,) * 3)
    canvas.paste(picture.resize(size, Image.Resampling.LANCZOS), ((width - size[0]) // 2, (height - size[1]) // 2))
    picture = canvas
  image = np.asarray(picture, dtype=np.uint8)
  return (image[..., None] if image.ndim == 2 else image), flip


def probabilities(network: trained.Network, images: np.ndarray) -> np.ndarray:
  """Class probabilities (softmax of the logits) for uint8 ``images`` (N, H, W, C)."""
  logits = inference.logits(network.model, network.params, images).astype(np.float64)
  exp = np.exp(logits - logits.max(axis=1, keepdims=True))
  return exp / exp.sum(axis=1, keepdims=True)


def predict(workdir: str, paths: Sequence[str], trial: str | None = None, invert: str = "auto", top: int = 3):
  """(the run's description, and per picture: (path, [(class name, probability)] best first, inverted))."""
  if invert not in INVERT:
    raise DataError(f"--invert={invert!r} is not allowed; use one of {INVERT}")
  found = trained.find(workdir, trial)
  network = trained.load(found.workdir)
  prepared = [prepare(path, network.image_shape, invert) for path in paths]  # every file read before any answer
  chances = probabilities(network, np.stack([image for image, _ in prepared]))
  answers = []
  for path, (_, flipped), row in zip(paths, prepared, chances, strict=True):
    best = np.argsort(-row, kind="stable")[:top]
    answers.append((path, [(network.class_names[i], float(row[i])) for i in best], flipped))
  summary = network.summary or {}
  accuracy = f", test accuracy {100 * summary['test_accuracy']:.2f}%" if "test_accuracy" in summary else ""
  about = f"{found.why}: " if found.why else ""
  return f"{about}{network.workdir} (epoch {network.epoch}{accuracy})", answers


def define_flags(values: flags.FlagValues) -> None:
  flags.DEFINE_string("workdir", None, "A trained run, or a sweep directory (its sweet spot).", flag_values=values)
  flags.DEFINE_string("trial", None, "In a sweep directory: a trial or configuration to use instead.",
                      flag_values=values)  # fmt: skip
  flags.DEFINE_enum("invert", "auto", INVERT, "Invert a picture (auto: one with a light border).", flag_values=values)
  flags.DEFINE_integer("top", 3, "How many classes to show per picture.", lower_bound=1, flag_values=values)
  flags.mark_flags_as_required(["workdir"], flag_values=values)


def main(values: flags.FlagValues, paths: Sequence[str]) -> None:
  about, answers = predict(values.workdir, paths, values.trial, values.invert, values.top)
  print(about)
  for path, best, flipped in answers:
    shown = "  ".join(f"{name} {100 * p:.2f}%" for name, p in best)
    print(f"{path}: {shown}{'  (inverted: light background)' if flipped else ''}")


if __name__ == "__main__":
  cli.run(main, define_flags, arguments=ARGUMENTS)
