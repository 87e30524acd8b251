"""The IDX reader and loader, the TFDS source under mock_data, and the data-source fallback."""

import gzip
import shutil

import numpy as np
import pytest

from convnet import idx, input_pipeline
from convnet.errors import ConfigError, DataError


@pytest.mark.parametrize("name", ["a-idx3-ubyte", "a-idx3-ubyte.gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip(tmp_path, name, dtype):
  array = (np.arange(2 * 3 * 5) - 7).astype(dtype).reshape(2, 3, 5)
  if dtype == np.uint8:
    array = np.arange(30, dtype=np.uint8).reshape(2, 3, 5)
  idx.write_idx(tmp_path / name, array)
  got = idx.read_idx(tmp_path / name)
  assert got.dtype == array.dtype and got.shape == array.shape
  np.testing.assert_array_equal(got, array)


def header(type_code, *dims):
  return bytes([0, 0, type_code, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)


@pytest.mark.parametrize(
  "content, message",
  [
    (header(0x08, 2, 3) + bytes(5), "truncated: header says (2, 3) (6 bytes of data), found 5 bytes"),
    (header(0x08, 2, 3) + bytes(7), "corrupt: header says (2, 3) (6 bytes of data), found 7 bytes"),
    (b"\x12\x34\x08\x01" + bytes(10), "wrong magic number 0x12340801"),
    (b"\x00\x00\x07\x01" + bytes(10), "wrong magic number 0x00000701"),
    (b"\x00\x00", "too short for an IDX header"),
    (b"\x00\x00\x08\x03\x00\x00", "truncated header"),
  ],
)
def test_bad_idx_files_name_the_file_and_the_problem(tmp_path, content, message):
  path = tmp_path / "bad-idx1-ubyte"
  path.write_bytes(content)
  with pytest.raises(DataError) as info:
    idx.read_idx(path)
  assert str(path) in str(info.value) and message in str(info.value)


def test_truncated_and_corrupt_gzip(tmp_path):
  data = gzip.compress(header(0x08, 100) + bytes(100))
  (tmp_path / "cut.gz").write_bytes(data[: len(data) // 2])
  (tmp_path / "flipped.gz").write_bytes(data[:12] + bytes(b ^ 0xFF for b in data[12:20]) + data[20:])
  for name in ("cut.gz", "flipped.gz"):
    with pytest.raises(DataError, match=f"{name}: corrupt or truncated gzip data"):
      idx.read_idx(tmp_path / name)


def test_missing_file(tmp_path):
  with pytest.raises(DataError, match="nope: file not found"):
    idx.read_idx(tmp_path / "nope")


def test_load_idx_directory(idx_dir):
  data = input_pipeline.load_idx(idx_dir)
  assert data.train_images.shape == (300, 28, 28, 1) and data.train_images.dtype == np.uint8
  assert data.test_images.shape == (103, 28, 28, 1) and data.test_labels.dtype == np.int32
  assert data.num_classes == 10 and data.image_shape == (28, 28, 1)


def write_split(directory, images, labels, split="train"):
  idx.write_idx(directory / f"{split}-images-idx3-ubyte", images)
  idx.write_idx(directory / f"{split}-labels-idx1-ubyte", labels)


def test_load_idx_checks_counts_labels_and_files(tmp_path):
  images = np.zeros((4, 5, 5), np.uint8)
  write_split(tmp_path, images, np.array([0, 1, 2, 1], np.uint8))
  with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\[\.gz\]: file not found; install the IDX files"):
    input_pipeline.load_idx(tmp_path)
  write_split(tmp_path, images[:3], np.array([0, 1, 2], np.uint8), "t10k")
  assert input_pipeline.load_idx(tmp_path).num_classes == 3
  write_split(tmp_path, images[:3], np.array([0, 1], np.uint8), "t10k")
  with pytest.raises(DataError, match="t10k-labels-idx1-ubyte: 2 labels but t10k-images-idx3-ubyte has 3 images"):
    input_pipeline.load_idx(tmp_path)
  write_split(tmp_path, images[:3], np.array([0, 1, 7], np.uint8), "t10k")
  with pytest.raises(DataError, match="t10k-labels-idx1-ubyte: label 7 is outside the allowed range 0..2"):
    input_pipeline.load_idx(tmp_path)  # 3 classes in the train labels
  write_split(tmp_path, images[:3], np.array([0, 1, 12], np.uint8), "t10k")
  with pytest.raises(DataError, match="label 12 is outside the allowed range 0..2"):
    input_pipeline.load_idx(
      tmp_path, input_pipeline.FASHION_MNIST_CLASSES
    )  # the classes are the labels', not the names
  with pytest.raises(DataError, match="IDX directory not found"):
    input_pipeline.load_idx(tmp_path / "missing")


def test_get_datasets_limits_and_class_names(idx_dir):
  data = input_pipeline.get_datasets(
    {"source": "idx", "dir": str(idx_dir), "num_train_examples": 50, "num_test_examples": 7}
  )
  assert len(data.train_labels) == 50 and len(data.test_labels) == 7
  assert data.class_names[0] == "T-shirt/top" and data.class_names[9] == "Ankle boot"
  with pytest.raises(ConfigError, match="dataset.num_train_examples=0 is not allowed"):
    input_pipeline.get_datasets({"dir": str(idx_dir), "num_train_examples": 0})
  with pytest.raises(ConfigError, match="dataset.source='csv' is not allowed"):
    input_pipeline.get_datasets({"source": "csv"})


def test_missing_default_directory_falls_back_to_tfds_then_names_both_ways(monkeypatch, tmp_path):
  missing = str(tmp_path / "not-installed")
  monkeypatch.setattr(input_pipeline, "DEFAULT_IDX_DIR", missing)
  calls = []

  def failing_tfds(name, data_dir=None):
    calls.append(name)
    raise DataError(f"TFDS dataset {name!r} could not be loaded (no network)")

  monkeypatch.setattr(input_pipeline, "load_tfds", failing_tfds)
  with pytest.raises(DataError) as info:
    input_pipeline.get_datasets({"source": "idx", "dir": missing})
  assert calls == ["fashion_mnist"]
  assert "apt-get install dataset-fashion-mnist" in str(info.value) and "source=tfds" in str(info.value)


@pytest.mark.parametrize(
  "name, shape, classes",
  [("fashion_mnist", (28, 28, 1), 10), ("cifar10", (32, 32, 3), 10), ("kmnist", (28, 28, 1), 10)],
)
def test_tfds_source_under_mock_data(name, shape, classes):
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=6):
    data = input_pipeline.get_datasets({"source": "tfds", "name": name, "num_test_examples": 4})
  assert data.train_images.shape == (6, *shape) and data.train_images.dtype == np.uint8
  assert data.test_images.shape == (4, *shape)
  assert data.num_classes == classes and data.train_labels.max() < classes
  assert data.source == f"tfds:{name}"


def test_the_dataset_is_read_once_per_process_while_its_files_are_unchanged(idx_dir, tmp_path):
  for path in idx_dir.iterdir():
    shutil.copy(path, tmp_path)
  first = input_pipeline.load_idx(tmp_path)
  assert input_pipeline.load_idx(tmp_path) is first  # the same arrays, not read again
  with pytest.raises(ValueError, match="read-only"):
    first.train_images[0, 0, 0, 0] = 1  # shared by every trial of the process: nobody may change it
  labels = idx.read_idx(tmp_path / "t10k-labels-idx1-ubyte.gz")
  labels[0] = (labels[0] + 1) % 10  # the same size, written at once: only the contents tell
  idx.write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
  changed = input_pipeline.load_idx(tmp_path)
  assert changed is not first and changed.test_labels[0] == labels[0] != first.test_labels[0]
