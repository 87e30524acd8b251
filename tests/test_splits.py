"""The validation split: held out of the training images, stratified, the same for every seed; records say which."""

from conftest import tiny_config
import numpy as np
import pytest

from convnet import input_pipeline, splits, train
from convnet.errors import ConfigError
from convnet.rundir import files


def test_validation_indices_are_stratified_fixed_and_seed_free():
  labels = np.repeat(np.arange(10), [600, 600, 600, 600, 600, 600, 600, 600, 600, 600])
  held = splits.validation_indices(labels, 1000)
  assert len(held) == len(set(held.tolist())) == 1000 and np.all(np.diff(held) > 0)
  assert np.bincount(labels[held]).tolist() == [100] * 10  # each class its share
  np.testing.assert_array_equal(held, splits.validation_indices(labels, 1000))  # the same on every call
  uneven = np.repeat([0, 1, 2], [50, 30, 20])
  counts = np.bincount(uneven[splits.validation_indices(uneven, 11)], minlength=3).tolist()
  assert counts == [6, 3, 2]  # 5.5, 3.3, 2.2: the largest remainder (class 0) gets the one left over


def test_the_split_is_carved_before_the_training_subset_and_never_overlaps(idx_dir):
  whole = input_pipeline.get_datasets({"dir": str(idx_dir), "validation_size": 60})
  small = input_pipeline.get_datasets({"dir": str(idx_dir), "validation_size": 60, "num_train_examples": 50})
  plain = input_pipeline.get_datasets({"dir": str(idx_dir)})
  assert whole.validation_images.shape == (60, 28, 28, 1) and len(whole.train_labels) == 240
  np.testing.assert_array_equal(whole.validation_images, small.validation_images)  # num_train_examples leaves it be
  np.testing.assert_array_equal(small.train_images, whole.train_images[:50])
  rows = {img.tobytes() for img in plain.train_images}
  assert len(rows) == 300  # the fixture's images are distinct, so set arithmetic can check the split
  held, kept = {i.tobytes() for i in whole.validation_images}, {i.tobytes() for i in whole.train_images}
  assert held | kept == rows and not held & kept
  assert plain.validation_labels is None and list(plain.eval_splits) == ["test"]
  assert list(whole.eval_splits) == ["validation", "test"]


@pytest.mark.parametrize("size", [-1, 300, 1.5, True, "10"])
def test_an_impossible_validation_size_is_one_line(idx_dir, size):
  with pytest.raises(ConfigError) as info:
    input_pipeline.get_datasets({"dir": str(idx_dir), "validation_size": size})
  assert f"dataset.validation_size={size!r} is not allowed" in str(info.value) and "1..299" in str(info.value)


def test_a_run_records_which_images_it_trains_on_and_scores(idx_dir, tmp_path):
  held = train.train_and_evaluate(
    tiny_config(idx_dir, num_epochs=1, **{"dataset.validation_size": 60}), str(tmp_path / "v")
  )
  course = train.train_and_evaluate(tiny_config(idx_dir, num_epochs=1), str(tmp_path / "c"))
  assert held["num_train_examples"] == 240 and held["num_validation_examples"] == 60
  assert "60 held out of them for validation" in held["splits"] and 0 <= held["validation_accuracy"] <= 1
  (line,) = files.read_jsonl(tmp_path / "v" / "metrics.jsonl")
  assert {"validation_accuracy", "validation_loss", "test_accuracy", "test_loss"} <= set(line)
  assert course["num_train_examples"] == 300 and course["num_validation_examples"] == 0
  assert "no validation split" in course["splits"] and "validation_accuracy" not in course
