"""Installs keep a user's jax: pyproject.toml states ranges that admit the accelerator images' jax, and
constraints.txt pins, within them, the exact versions that CI and the README's commands install."""

import tomllib

from conftest import REPO
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

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
