"""How the data's images are split: a validation split held out of training, and smaller subsets.

The validation split (:func:`validation_indices`, ``config.dataset.validation_size``) is carved from
the training images before ``dataset.num_train_examples`` is applied: stratified (each class in its
share of the training labels) and drawn by its own fixed generator (:data:`VALIDATION_SEED`), so it
holds the same images for every seed, configuration and trial size. Sweeps decide on it; the test
split is measured and reported only. A run without one (``validation_size=0``, the course's recipe)
trains on every training image. These functions take and return ``convnet.input_pipeline.Dataset``.
"""

import dataclasses
from typing import Any

import numpy as np

from convnet.errors import ConfigError

VALIDATION_SEED = 20_250_611  # the validation split's own generator: never config.seed


def validation_indices(labels: np.ndarray, size: int) -> np.ndarray:
  """``size`` sorted indices into ``labels``: a stratified random sample, the same on every call.

  Each class gets its share of ``size`` (``size * count / total``, rounded down; the images left over
  go to the classes with the largest remainders, ties to the lower class), drawn without replacement
  by a generator seeded with :data:`VALIDATION_SEED`.
  """
  classes, counts = np.unique(labels, return_counts=True)
  share = counts * size / len(labels)
  take = np.floor(share).astype(np.int64)
  leftover = size - int(take.sum())
  take[np.argsort(-(share - take), kind="stable")[:leftover]] += 1
  rng = np.random.default_rng(VALIDATION_SEED)
  chosen = [rng.choice(np.flatnonzero(labels == c), k, replace=False) for c, k in zip(classes, take, strict=True)]
  return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)


def split_validation(dataset: Any, size: int | None) -> Any:
  """``dataset`` with ``size`` of its training images moved to a validation split (0 or None: none)."""
  available = len(dataset.train_labels)
  if size is None or size == 0:
    return dataset
  if not (isinstance(size, int) and not isinstance(size, bool) and 1 <= size < available):
    raise ConfigError(
      f"dataset.validation_size={size!r} is not allowed; {dataset.source} has {available:,} training images: "
      f"use 0 (no validation split) or 1..{available - 1} (carved from them)"
    )
  held = validation_indices(dataset.train_labels, size)
  keep = np.ones(available, bool)
  keep[held] = False
  return dataclasses.replace(
    dataset,
    train_images=dataset.train_images[keep],
    train_labels=dataset.train_labels[keep],
    validation_images=dataset.train_images[held],
    validation_labels=dataset.train_labels[held],
  )


def subset(dataset: Any, num_train: int | None, num_test: int | None) -> Any:
  for field, value, available in (
    ("num_train_examples", num_train, len(dataset.train_labels)),
    ("num_test_examples", num_test, len(dataset.test_labels)),
  ):
    if value is not None and not (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= available):
      raise ConfigError(
        f"dataset.{field}={value!r} is not allowed; {dataset.source} has {available:,} of them: "
        f"use 1..{available} or None (all)"
      )
  return dataclasses.replace(
    dataset,
    train_images=dataset.train_images[:num_train],
    train_labels=dataset.train_labels[:num_train],
    test_images=dataset.test_images[:num_test],
    test_labels=dataset.test_labels[:num_test],
  )


def describe(data: Any) -> str:
  """Which images a run trains on and which it scores, in words (summary.json's ``splits``)."""
  if data.validation_labels is None:
    return (f"trained on {len(data.train_labels):,} training images (no validation split); "
            f"accuracy reported on {len(data.test_labels):,} test images")  # fmt: skip
  return (f"trained on {len(data.train_labels):,} training images; {len(data.validation_labels):,} held out "
          f"of them for validation (decisions); accuracy reported on {len(data.test_labels):,} test images")  # fmt: skip


def facts(data: Any) -> dict[str, Any]:
  """summary.json's fields about the data's splits: their sizes and :func:`describe`'s words."""
  return {
    "num_train_examples": len(data.train_labels),
    "num_validation_examples": 0 if data.validation_labels is None else len(data.validation_labels),
    "num_test_examples": len(data.test_labels),
    "splits": describe(data),
  }
