"""The data: IDX files (``convnet.idx``), a TFDS source, and the whole dataset in memory as uint8 arrays.

``get_datasets(config)`` returns a :class:`Dataset` of ``(N, H, W, C)`` uint8 images and int32
labels, train and test, and a validation split when ``config.dataset.validation_size`` asks for one.
Images stay uint8 until the compiled step scales them (in the model).

The validation split is carved from the training images before ``num_train_examples`` is applied
(``convnet.splits``): stratified, the same images for every seed, configuration and trial size.
Sweeps decide on it; the test split only reports.

``config.dataset.source``:
  * ``'idx'``: the original IDX files (``train-images-idx3-ubyte[.gz]``, ...) in ``config.dataset.dir``;
    the Debian package ``dataset-fashion-mnist`` installs them in :data:`DEFAULT_IDX_DIR`. If that
    default directory is absent, TFDS is tried next.
  * ``'tfds'``: any TFDS image-classification dataset (``config.dataset.name``: fashion_mnist, mnist,
    kmnist, cifar10, ...) through ``tfds.data_source`` (no TensorFlow needed once prepared). Shapes,
    channels and classes come from the data.
"""

from collections.abc import Mapping
import dataclasses
import gzip
import hashlib
import os
from pathlib import Path
from typing import Any
import zlib

import numpy as np

from convnet import idx, splits
from convnet.errors import ConfigError, DataError

DEFAULT_IDX_DIR = "/usr/share/datasets/fashion-mnist"
SOURCES = ("idx", "tfds")
IDX_FILES = {
  "train_images": "train-images-idx3-ubyte",
  "train_labels": "train-labels-idx1-ubyte",
  "test_images": "t10k-images-idx3-ubyte",
  "test_labels": "t10k-labels-idx1-ubyte",
}
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
GET_DATA_HELP = (
  "install the IDX files with `apt-get install dataset-fashion-mnist` (they go to "
  f"{DEFAULT_IDX_DIR}; or point --config.dataset.dir at a folder of IDX files), or use "
  "--config.dataset.source=tfds on a machine that can download TFDS datasets"
)

# IDX type codes (third byte of the magic number) -> big-endian numpy dtypes.


@dataclasses.dataclass(frozen=True)
class Dataset:
  train_images: np.ndarray  # (N, H, W, C) uint8
  train_labels: np.ndarray  # (N,) int32
  test_images: np.ndarray
  test_labels: np.ndarray
  class_names: tuple[str, ...]
  source: str  # where the data came from, for logs
  validation_images: np.ndarray | None = None  # carved from the training images (dataset.validation_size)
  validation_labels: np.ndarray | None = None

  @property
  def eval_splits(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The splits that are scored after every epoch: ``validation`` (when there is one), then ``test``."""
    splits = {}
    if self.validation_labels is not None:
      splits["validation"] = (self.validation_images, self.validation_labels)
    splits["test"] = (self.test_images, self.test_labels)
    return splits

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return tuple(int(d) for d in self.train_images.shape[1:])


def _find_idx_file(directory: Path, stem: str) -> Path:
  for name in (stem + ".gz", stem):
    if (directory / name).is_file():
      return directory / name
  # The MNIST mirrors also ship names like train-images.idx3-ubyte.
  for name in (stem.replace("-idx", ".idx") + ".gz", stem.replace("-idx", ".idx")):
    if (directory / name).is_file():
      return directory / name
  raise DataError(f"{directory / stem}[.gz]: file not found; {GET_DATA_HELP}")


def _check_images(path: Path, images: np.ndarray) -> np.ndarray:
  if images.dtype != np.uint8 or images.ndim not in (3, 4):
    raise DataError(f"{path}: expected uint8 images of shape (N, H, W[, C]); got {images.dtype} {images.shape}")
  return images[..., None] if images.ndim == 3 else images


def _check_labels(path: Path, labels: np.ndarray, count: int, images_path: Path) -> np.ndarray:
  if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
    raise DataError(f"{path}: expected a 1-D integer label file; got {labels.dtype} {labels.shape}")
  if labels.shape[0] != count:
    raise DataError(f"{path}: {labels.shape[0]} labels but {images_path.name} has {count} images")
  return labels.astype(np.int32)


_LOADED: dict[tuple, Dataset] = {}  # the last dataset loaded in this process, by what it was read from


def _cached(key: tuple, load) -> Dataset:
  """``load()``'s dataset, kept (read-only) for the next call with the same key: a sweep's trials in one
  process read the data once. One dataset is kept at a time."""
  if key not in _LOADED:
    dataset = load()
    for array in (dataset.train_images, dataset.train_labels, dataset.test_images, dataset.test_labels):
      array.flags.writeable = False
    _LOADED.clear()
    _LOADED[key] = dataset
  return _LOADED[key]


def load_idx(directory: str | os.PathLike, class_names: tuple[str, ...] | None = None) -> Dataset:
  """Loads train/test IDX files from ``directory``; checks counts, shapes and the label range.

  The arrays are read-only and kept for the next call in this process while the files' contents are
  the same (a digest of their bytes: reading them costs ~50 ms, decoding them ~0.5 s).
  """
  directory = Path(directory)
  if not directory.is_dir():
    raise DataError(f"{directory}: IDX directory not found; {GET_DATA_HELP}")
  paths = {key: _find_idx_file(directory, stem) for key, stem in IDX_FILES.items()}
  files = []
  for path in paths.values():
    try:
      with open(path, "rb") as f:
        files.append((str(path.resolve()), hashlib.file_digest(f, "blake2b").hexdigest()))
    except OSError as e:
      raise DataError(f"{path}: cannot read ({e.strerror})") from None
  return _cached(("idx", tuple(files), class_names), lambda: _load_idx(directory, paths, class_names))


def _load_idx(directory: Path, paths: dict[str, Path], class_names: tuple[str, ...] | None) -> Dataset:
  arrays = {}
  for split in ("train", "test"):
    images = _check_images(paths[f"{split}_images"], idx.read_idx(paths[f"{split}_images"]))
    labels = _check_labels(
      paths[f"{split}_labels"], idx.read_idx(paths[f"{split}_labels"]), images.shape[0], paths[f"{split}_images"]
    )
    arrays[split] = (images, labels)
  if arrays["train"][0].shape[1:] != arrays["test"][0].shape[1:]:
    raise DataError(
      f"{directory}: train images are {arrays['train'][0].shape[1:]} but test images are {arrays['test'][0].shape[1:]}"
    )
  # The classes are the training labels' (0..max); the given names only when there is one per class.
  num_classes = int(arrays["train"][1].max(initial=0)) + 1
  for split, key in (("train", "train_labels"), ("test", "test_labels")):
    labels = arrays[split][1]
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
      raise DataError(
        f"{paths[key]}: label {int(labels.max()) if labels.max() >= num_classes else int(labels.min())} "
        f"is outside the allowed range 0..{num_classes - 1}"
      )
  if num_classes < 2:
    raise DataError(f"{paths['train_labels']}: only {num_classes} class in the labels; need at least 2")
  fits = class_names is not None and len(class_names) == num_classes
  names = tuple(class_names) if fits else tuple(str(i) for i in range(num_classes))
  return Dataset(*arrays["train"], *arrays["test"], class_names=names, source=f"idx:{directory}")


def load_tfds(name: str, data_dir: str | None = None) -> Dataset:
  """Loads a TFDS image-classification dataset into memory through ``tfds.data_source``."""
  import tensorflow_datasets as tfds  # imported here: TFDS is slow to import and optional at run time

  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except Exception as e:  # noqa: BLE001 - TFDS raises many kinds for an unknown name
    raise DataError(f"TFDS has no dataset {name!r} ({type(e).__name__}); see tfds.list_builders()") from None
  prepared = builder.is_prepared()
  try:
    sources = tfds.data_source(name, split=["train", "test"], data_dir=data_dir)
  except Exception as e:  # TFDS raises many kinds: no network, no TensorFlow to prepare, a broken download
    message = str(e).splitlines()[0][:200] if str(e) else ""
    if not prepared:
      raise DataError(
        f"TFDS dataset {name!r} is not prepared in {builder.data_dir.rsplit('/', 2)[0]} and could not be "
        f"downloaded here ({type(e).__name__}: {message}); prepare it on a machine with network access "
        f"(tfds.builder({name!r}).download_and_prepare()) and copy its folder here, pointing "
        f"--config.dataset.tfds_data_dir at it"
      ) from None
    raise DataError(f"TFDS dataset {name!r} could not be loaded ({type(e).__name__}: {message})") from None
  features = builder.info.features
  image_key = next((k for k in ("image", "img") if k in features), None)
  if image_key is None or "label" not in features:
    raise DataError(f"TFDS dataset {name!r} has features {list(features)}; need 'image' and 'label'")
  arrays = []
  for source in sources:
    examples = [source[i] for i in range(len(source))]
    if not examples:
      raise DataError(f"TFDS dataset {name!r} has an empty split")
    images = np.stack([np.asarray(ex[image_key], np.uint8) for ex in examples])
    if images.ndim == 3:
      images = images[..., None]
    arrays += [images, np.asarray([ex["label"] for ex in examples], np.int32)]
  class_names = tuple(features["label"].names)
  return Dataset(*arrays, class_names=class_names, source=f"tfds:{name}")


def peek_shape(dataset_config: Mapping[str, Any]) -> tuple[tuple[int, int, int], int]:
  """(image shape, number of classes) of the configured data without loading the images."""
  source = dataset_config.get("source", "idx")
  name = dataset_config.get("name", "fashion_mnist")
  directory = Path(dataset_config.get("dir") or DEFAULT_IDX_DIR)
  if source == "idx" and (directory.is_dir() or str(directory) != DEFAULT_IDX_DIR):
    path = _find_idx_file(directory, IDX_FILES["train_images"])
    with open(path, "rb") as f:
      raw = f.read(2)
    try:
      with gzip.open(path) if raw == b"\x1f\x8b" else open(path, "rb") as f:
        head = f.read(20)
    except (OSError, EOFError, zlib.error) as e:
      raise DataError(f"{path}: corrupt or truncated gzip data ({e})") from None
    ndim = head[3] if len(head) >= 4 else 0
    if head[:3] != b"\x00\x00\x08" or ndim not in (3, 4) or len(head) < 4 + 4 * ndim:
      raise DataError(f"{path}: not an IDX uint8 image file (header {head[:4].hex()})")
    _, height, width, *channels = (int.from_bytes(head[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    image_shape = (height, width, channels[0] if channels else 1)
    labels = idx.read_idx(_find_idx_file(directory, IDX_FILES["train_labels"]))  # 60 kB: the classes are the labels'
    return image_shape, int(labels.max(initial=0)) + 1
  import tensorflow_datasets as tfds

  try:
    features = tfds.builder(name, data_dir=dataset_config.get("tfds_data_dir")).info.features
  except Exception as e:  # noqa: BLE001 - TFDS raises many kinds
    raise DataError(f"TFDS dataset {name!r} is unknown here ({type(e).__name__}); {GET_DATA_HELP}") from None
  image = features["image"] if "image" in features else features["img"]
  shape = tuple(int(d) for d in image.shape)
  return (*shape[:2], shape[2] if len(shape) > 2 else 1), int(features["label"].num_classes)


def get_datasets(dataset_config: Mapping[str, Any]) -> Dataset:
  """The train, validation and test splits that ``config.dataset`` asks for, in memory."""
  source = dataset_config.get("source", "idx")
  name = dataset_config.get("name", "fashion_mnist")
  if source not in SOURCES:
    raise ConfigError(f"dataset.source={source!r} is not allowed; use one of {SOURCES}")
  class_names = FASHION_MNIST_CLASSES if name == "fashion_mnist" else None
  if source == "idx":
    directory = dataset_config.get("dir") or DEFAULT_IDX_DIR
    if Path(directory).is_dir() or str(directory) != DEFAULT_IDX_DIR:
      dataset = load_idx(directory, class_names)
    else:
      try:
        dataset = load_tfds(name, dataset_config.get("tfds_data_dir"))
      except DataError as e:
        raise DataError(f"no data: {directory} does not exist and {e}; {GET_DATA_HELP}") from None
  else:
    try:
      dataset = load_tfds(name, dataset_config.get("tfds_data_dir"))
    except DataError as e:
      raise DataError(f"{e}; {GET_DATA_HELP}") from None
  dataset = splits.split_validation(dataset, dataset_config.get("validation_size"))
  return splits.subset(dataset, dataset_config.get("num_train_examples"), dataset_config.get("num_test_examples"))
