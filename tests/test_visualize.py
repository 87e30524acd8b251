"""Layer activations, filters and the walkthrough: shapes, numerics against numpy, PNGs, errors."""

import os
import subprocess
import sys

from conftest import REPO, tiny_config
import numpy as np
from PIL import Image
import pytest

from convnet import train, visualize, walkthrough
from convnet.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def trained(idx_dir, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("trained")
  config = tiny_config(
    idx_dir, num_epochs=1, tensorboard=False, **{"model.features": (6, 5, 4), "model.kernel_size": (5, 3, 3)}
  )
  train.train_and_evaluate(config, str(workdir))
  return workdir


def run_module(*args):
  env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
  return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_activation_shapes_agree_with_the_summary_table(trained):
  run = visualize.load_run(trained)
  outputs = visualize.layer_outputs(run.model, run.params, run.data.test_images[:3])
  expected = {s.name: (3, *s.output_shape) for s in run.specs if s.kind != "Dense"}
  assert {name: value.shape for name, value in outputs.items()} == expected
  assert list(outputs) == [s.name for s in run.specs if s.kind != "Dense"]  # layer order
  assert visualize.first_layer_kernels(run.params).shape == (5, 5, 1, 6)


def test_walkthrough_convolution_equals_numpy():
  rng = np.random.default_rng(0)
  image = rng.uniform(0, 255, (7, 9)).astype(np.float32)
  kernel = walkthrough.CLASSIC_FILTERS["vertical_lines"]
  expected = np.zeros((5, 7), np.float32)
  for i in range(5):
    for j in range(7):
      expected[i, j] = np.sum(image[i : i + 3, j : j + 3] * kernel)
  np.testing.assert_allclose(walkthrough.filter_image(image, kernel, clip=False), expected, rtol=1e-5, atol=1e-3)
  np.testing.assert_allclose(walkthrough.filter_image(image, kernel), np.clip(expected, 0, 255), rtol=1e-5, atol=1e-3)


def test_pooling_picks_the_maximum_of_each_window():
  image = np.random.default_rng(1).uniform(0, 255, (9, 6)).astype(np.float32)
  expected = image[:8, :6].reshape(4, 2, 3, 2).max(axis=(1, 3))  # the odd last row is dropped
  np.testing.assert_array_equal(walkthrough.pool_image(image), expected)


def test_the_photo_is_a_real_grayscale_photograph():
  photo = walkthrough.photo()
  assert photo.shape == (600, 512) and photo.dtype == np.float32
  assert 0 <= photo.min() < 30 and 220 < photo.max() <= 255 and photo.std() > 30  # real contrast, not a stub


def test_walkthrough_writes_pngs_of_the_expected_sizes(tmp_path):
  result = run_module("convnet.walkthrough", f"--out={tmp_path}")
  assert result.returncode == 0, result.stderr
  assert "600 x 512 -> (600-3+1) x (512-3+1) = 598 x 510 -> 2x2 max pool -> 299 x 255" in result.stdout
  sizes = {p.name: Image.open(p).size for p in tmp_path.glob("*.png")}
  assert sizes["original.png"] == (512, 600)
  for name in walkthrough.CLASSIC_FILTERS:
    assert sizes[f"{name}.png"] == (510, 598) and sizes[f"{name}_pooled.png"] == (255, 299)


@pytest.mark.slow
def test_visualize_commands_write_pngs(trained, tmp_path):
  for command, extra in (("activations", ["--images=0,5", "--filter=3"]), ("filters", [])):
    out = tmp_path / f"{command}.png"
    result = run_module("convnet.visualize", f"--plot={command}", f"--workdir={trained}", f"--out={out}", *extra)
    assert result.returncode == 0, result.stderr
    with Image.open(out) as image:
      image.verify()
      assert image.format == "PNG" and min(image.size) > 100


def test_default_images_are_three_of_the_first_images_class():
  labels = np.array([9, 2, 9, 1, 9, 9])
  assert visualize.default_images(labels) == [0, 2, 4]


@pytest.mark.slow
def test_bad_indices_and_missing_runs_give_clear_errors(trained, tmp_path):
  run = visualize.load_run(trained)
  with pytest.raises(ConfigError, match=r"image index 103 is out of range; the test set has images 0..102"):
    visualize.activation_figure(run, [0, 103])
  with pytest.raises(ConfigError, match=r"filter 4 is out of range; this model's conv layers have filters 0..3"):
    visualize.activation_figure(run, [0], filter_index=4)
  with pytest.raises(DataError, match="workdir not found"):
    visualize.load_run(tmp_path / "nothing")
  (tmp_path / "untrained").mkdir()
  (tmp_path / "untrained" / "config.json").write_text((trained / "config.json").read_text())
  with pytest.raises(DataError, match="no checkpoint found"):
    visualize.load_run(tmp_path / "untrained")
  result = run_module(
    "convnet.visualize", "--plot=activations", f"--workdir={trained}", "--images=0,999", f"--out={tmp_path / 'x.png'}"
  )
  assert result.returncode == 1 and result.stderr.strip().splitlines()[-1] == (
    "error: image index 999 is out of range; the test set has images 0..102"
  )
