"""Shared fixtures: a small generated IDX dataset, the real Fashion-MNIST directory, tiny configs.

The suite runs on the CPU, also on a host with a GPU or TPU: its exact comparisons and device counts
are the CPU's. ``CONVNET_TEST_PLATFORM=gpu,cpu python -m pytest -m accelerator`` runs the accelerator tier
(tests/test_on_accelerator.py) on the GPU instead.
"""

import os
import shutil
import tempfile

from convnet import idx, runtime

TEST_PLATFORM = os.environ.get("CONVNET_TEST_PLATFORM", "cpu")
# The platform, preallocation off (test subprocesses inherit both) and the XLA:CPU flags, before jax starts.
runtime.configure_xla(TEST_PLATFORM)
# One persistent compilation cache for the whole session, its subprocesses included (every program,
# however quick its compile), as a sweep shares one across its trials: the suite's processes build
# the same small models over and over. A cache the user set is kept. Removed at the end of the session.
OWN_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  OWN_CACHE = os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="convnet-tests-jax-cache-")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

from pathlib import Path  # noqa: E402
import socket  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from convnet import configuration, input_pipeline  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")  # catch silent broadcasting bugs
# Full float32 matmuls on every backend: the tests compare with rtol 1e-4/1e-5, which the TF32
# matmuls that JAX uses by default on recent GPUs would not meet (a no-op on the CPU).
jax.config.update("jax_default_matmul_precision", "float32")

REPO = Path(__file__).resolve().parents[1]


def make_images(num: int, num_classes: int = 10, size: int = 28, seed: int = 0):
  """Learnable toy images: class c lights a 6x6 patch at a class-specific place, plus noise."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, num_classes, num).astype(np.uint8)
  images = rng.integers(0, 40, (num, size, size), dtype=np.uint8)
  for c in range(num_classes):
    row, col = 2 + 7 * (c // 3), 2 + 7 * (c % 3)
    images[labels == c, row : row + 6, col : col + 6] = 220
  return images, labels


@pytest.fixture(scope="session")
def idx_dir(tmp_path_factory) -> Path:
  """A gzipped IDX dataset like Fashion-MNIST's files: 300 train and 103 test 28x28 images."""
  directory = tmp_path_factory.mktemp("idx")
  for split, num, seed in (("train", 300, 0), ("t10k", 103, 1)):
    images, labels = make_images(num, seed=seed)
    idx.write_idx(directory / f"{split}-images-idx3-ubyte.gz", images)
    idx.write_idx(directory / f"{split}-labels-idx1-ubyte.gz", labels)
  return directory


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
  """The real Fashion-MNIST IDX files; CI installs them (apt-get install dataset-fashion-mnist)."""
  directory = Path(input_pipeline.DEFAULT_IDX_DIR)
  if not directory.is_dir():
    if os.environ.get("CI"):
      pytest.fail(f"{directory} is missing in CI: .ci/run must apt-get install dataset-fashion-mnist")
    pytest.skip(f"{directory} not installed (apt-get install dataset-fashion-mnist)")
  return directory


def tiny_config(data_dir, **overrides):
  """configs/default.py on ``data_dir`` with a small model and no progress bar."""
  config = configuration.load_config(REPO / "configs" / "default.py")
  config.dataset.dir = str(data_dir)
  config.model.features = (8, 8)
  config.model.dense_features = (16,)
  config.num_epochs = 2
  config.batch_size = 16
  config.eval_batch_size = 50
  config.steps_per_call = 0
  config.progress = False
  config.inference.seconds = 0.0  # not measured (its compilations cost ~0.5 s a trial): test_inference.py measures
  config.update_from_flattened_dict(overrides)
  return config


def sweep_config(data_dir, **fields):
  """configs/sweep.py on ``data_dir`` as one tiny trial (4-4 filters, 3x3, seed 0, 1 epoch, no events);
  ``fields`` by dotted path, e.g. ``**{"sweep.axes.seeds": (0, 1)}``."""
  config = configuration.load_config(REPO / "configs" / "sweep.py")
  config.dataset.dir = str(data_dir)
  config.dataset.validation_size = 60  # of the fixture's 300 training images
  config.num_epochs = 1
  config.batch_size = 16
  config.steps_per_call = 0
  config.tensorboard = False
  config.model.dense_features = (8,)
  config.inference.seconds = 0.0  # not measured (its compilations cost ~0.5 s a trial): test_inference.py measures
  config.sweep.axes.features = ((4, 4),)
  config.sweep.axes.kernel_size = (3,)
  config.sweep.axes.seeds = (0,)
  with config.unlocked():
    config.update_from_flattened_dict(fields)
  return config


def free_port() -> int:
  """A TCP port on 127.0.0.1 that nothing listens on now."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


SLOW_TOO = ("ray", "notebook", "docs", "install")


# pytest-xdist (``-n 2 --dist loadfile`` in pyproject.toml) runs the modules on two workers, each module
# on one worker (its module-scoped fixtures are built once), handing out the next module to the first worker
# that is nearly done. The longest modules start first, longest to shortest (then the rest, each a few
# seconds), so that the two workers end together: measured on 2 cores (2026-12-01), they ended 5 s apart in
# this order, up to 25 s apart in xdist's own (the modules with the most tests first, which it would use).
LONG_FIRST = (
  "test_docs.py", "test_accelerators.py", "test_executors.py", "test_sweep.py", "test_gpu_check.py", "test_faults.py",
  "test_cli.py", "test_models.py", "test_devices.py", "test_ops.py", "test_fit.py", "test_benchmark.py",
  "test_inference.py", "test_visualize.py", "test_racing.py", "test_notebook.py", "test_end_to_end.py",
)  # fmt: skip


def pytest_configure(config):
  if hasattr(config.option, "loadscopereorder"):  # pytest-xdist would hand out the modules with the most tests first
    config.option.loadscopereorder = False


def pytest_collection_modifyitems(items):
  """A ray, notebook, docs or install test is slow too: `-m "not slow"` leaves them out. The long modules first."""
  for item in items:
    if any(item.get_closest_marker(name) for name in SLOW_TOO) and not item.get_closest_marker("slow"):
      item.add_marker(pytest.mark.slow)
  rank = {name: i for i, name in enumerate(LONG_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(LONG_FIRST)))  # stable: each module stays in one piece


def pytest_unconfigure(config):
  if OWN_CACHE:
    shutil.rmtree(OWN_CACHE, ignore_errors=True)
