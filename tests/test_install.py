"""Installs keep a user's jax: pyproject.toml states ranges that admit the accelerator images' jax, and
constraints.txt pins, within them, the exact versions that CI and the README's commands install."""

import tomllib

from conftest import REPO
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
import pytest

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def requirements(names=None) -> dict[str, Requirement]:
  listed = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
  return {canonicalize_name(r.name): r for r in listed if names is None or canonicalize_name(r.name) in names}


def pins() -> dict[str, str]:
  lines = (REPO / "constraints.txt").read_text().splitlines()
  pairs = [line.split("==") for line in lines if line and not line.startswith("#")]
  return {canonicalize_name(name): version for name, version in pairs}


def test_the_jax_stack_is_a_range_that_keeps_an_accelerator_images_jax():
  stack = requirements({"jax", "jaxlib", "flax", "optax", "orbax-checkpoint"})
  assert len(stack) == 5
  for name in ("jax", "jaxlib"):
    specifier = stack[name].specifier
    assert "0.10.2" in specifier and "0.11.2" in specifier, (name, specifier)  # CI's and the GPU image's
    assert "==" not in str(specifier)


def test_constraints_pin_every_dependency_within_its_range():
  pinned = pins()
  for name, requirement in requirements().items():
    assert name in pinned, f"{name} is not pinned in constraints.txt"
    assert pinned[name] in requirement.specifier, (name, pinned[name], str(requirement.specifier))
  assert pinned["jax"] == pinned["jaxlib"] == "0.10.2"


def test_accelerator_extras_name_the_jax_builds():
  extras = PYPROJECT["project"]["optional-dependencies"]
  assert [Requirement(r).extras for r in extras["cuda"]] == [{"cuda13"}]
  assert [Requirement(r).extras for r in extras["tpu"]] == [{"tpu"}]


@pytest.mark.install
def test_commands_run_from_the_parent_of_a_clone_named_convnet_and_from_anywhere(idx_dir, tmp_path):
  """A clone folder named convnet in the directory a command runs from cannot shadow the package (src layout)."""
  import os
  import subprocess
  import sys

  parent = tmp_path / "parent"
  parent.mkdir()
  (parent / "convnet").symlink_to(REPO, target_is_directory=True)  # the clone, as `git clone ... convnet` names it
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  small = [f"--config.dataset.dir={idx_dir}", "--config.num_epochs=1", "--config.model.features=(4,4)",
           "--config.model.dense_features=(8,)", "--config.tensorboard=False", "--config.progress=False",
           "--config.inference.seconds=0"]  # fmt: skip
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the installed package, as a user has it
  for cwd in (parent, elsewhere):
    where = subprocess.run([sys.executable, "-c", "import convnet; print(convnet.__file__)"], cwd=cwd, env=env,
                           capture_output=True, text=True)  # fmt: skip
    assert where.returncode == 0 and where.stdout.strip().endswith("src/convnet/__init__.py"), where.stderr
  result = subprocess.run(  # a training from the parent: the package, its shipped configs (configs/ is not here)
    [sys.executable, "-m", "convnet.main", "--config=configs/default.py", "--workdir=runs/one", *small],
    cwd=parent, env=env, capture_output=True, text=True, timeout=300,
  )  # fmt: skip
  assert result.returncode == 0, result.stderr[-3000:]
  assert "test accuracy" in result.stdout and (parent / "runs" / "one" / "summary.json").is_file()
