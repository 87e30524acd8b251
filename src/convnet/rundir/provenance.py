"""What made a result: the code that ran, the libraries, the machine and the backend.

:func:`code_record` goes into every run's ``config.json`` and ``summary.json`` and every sweep
result line: convnet's version, a digest of its source files (it tells two programs apart also in
an install that is no git checkout), the git commit and whether the checkout had uncommitted
changes (when convnet runs from one), the op implementation each conv layer used, and the library
versions. :func:`code_key` is what two runs must share to count as the same program;
:func:`environment` says where it ran.
"""

from collections.abc import Callable, Mapping, Sequence
import functools
import hashlib
import os
from pathlib import Path
import platform
import subprocess
from typing import Any

import convnet

PACKAGE_DIR = Path(convnet.__file__).resolve().parent
LIBRARIES = ("jax", "jaxlib", "flax", "optax", "orbax.checkpoint", "numpy", "ml_collections")


def source_digest(directory: Path = PACKAGE_DIR) -> str:
  """SHA-256 (first 12 hex digits) over the paths and contents of the package's ``.py`` files (its
  subpackages too; not the shipped configs, which are config files, recorded in config.json)."""
  digest = hashlib.sha256()
  paths = [p for p in directory.rglob("*.py") if p.relative_to(directory).parts[0] != "configs"]
  for path in sorted(paths, key=lambda p: p.relative_to(directory).as_posix()):
    digest.update(path.relative_to(directory).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
  return digest.hexdigest()[:12]


def _git(directory: Path, *args: str) -> str | None:
  try:
    result = subprocess.run(
      ["git", "-C", str(directory), *args], capture_output=True, text=True, timeout=20, check=True
    )
  except (OSError, subprocess.SubprocessError):
    return None
  return result.stdout


def git_state(directory: Path = PACKAGE_DIR) -> dict[str, Any] | None:
  """``{"commit": sha, "dirty": bool}`` if ``directory`` is tracked in a git checkout, else None.

  Dirty means uncommitted changes to the package or the configs beside it. A copy installed inside
  a checkout (a virtual environment in the repository) is not tracked there and gives None.
  """
  if _git(directory, "ls-files", "--error-unmatch", "__init__.py") is None:
    return None
  commit = _git(directory, "rev-parse", "HEAD")
  status = _git(directory, "status", "--porcelain", "--", ".", "../configs")
  if commit is None or status is None:
    return None
  return {"commit": commit.strip(), "dirty": bool(status.strip())}


def library_versions() -> dict[str, str]:
  """Python and the versions of the libraries a result depends on (those already imported, or importable)."""
  import importlib

  versions = {"python": platform.python_version()}
  for name in LIBRARIES:
    try:
      versions[name.split(".")[0]] = str(importlib.import_module(name).__version__)
    except (ImportError, AttributeError):
      versions[name.split(".")[0]] = "?"
  return versions


@functools.cache
def _loaded() -> tuple[str, dict[str, Any] | None]:
  """(source digest, git state) of the package as this process first recorded it: the code it runs. A
  file edited on disk later (a long sweep while someone works in the checkout) does not change the
  modules this process imported, so it must not change the record either."""
  return source_digest(), git_state()


def code_record(ops: Mapping[str, str] | None = None) -> dict[str, Any]:
  """The code that runs now (read once per process: :func:`_loaded`); ``ops``: the implementation each
  layer uses (``models.layer_ops``)."""
  source, git = _loaded()
  return {
    "convnet": convnet.__version__,
    "source": source,
    "git": git,
    "ops": dict(ops or {}),
    "versions": library_versions(),
  }


def code_key(code: Mapping[str, Any] | None) -> str:
  """A short text that differs exactly when two code records describe different programs."""
  if not code:
    return "unrecorded"
  versions = code.get("versions", {})
  libraries = ", ".join(f"{k} {versions[k]}" for k in ("jax", "jaxlib", "flax") if k in versions)
  return f"{code_label(code)}; {libraries}"


def code_label(code: Mapping[str, Any] | None) -> str:
  """'convnet 0.1.0 (source 1a2b3c4d5e6f, commit 29d8960, uncommitted changes)' for reports."""
  if not code:
    return "unrecorded code"
  git = code.get("git")
  where = f", commit {git['commit'][:7]}{', uncommitted changes' if git['dirty'] else ''}" if git else ""
  return f"convnet {code.get('convnet')} (source {code.get('source')}{where})"


def cpu_name() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


PLUGIN_DISTRIBUTIONS = ("jax-cuda13-plugin", "jax-cuda12-plugin", "jax-rocm7-plugin", "libtpu")


def jax_build() -> str:
  """The jax that runs: 'jax 0.11.2, jaxlib 0.11.2, jax-cuda13-plugin 0.11.2' (a CPU build names no plugin)."""
  import importlib.metadata

  parts = []
  for name in ("jax", "jaxlib", *PLUGIN_DISTRIBUTIONS):
    try:
      parts.append(f"{name} {importlib.metadata.version(name)}")
    except importlib.metadata.PackageNotFoundError:
      pass
  return ", ".join(parts)


def environment() -> dict[str, Any]:
  """The backend, the first device, the device count, the jax build and the host machine (starts jax's
  backend)."""
  import jax

  device = jax.devices()[0]
  return {
    "backend": jax.default_backend(),
    "device": f"{device.platform}:{device.device_kind}",
    "num_devices": jax.device_count(),
    "jax_build": jax_build(),
    "machine": f"{cpu_name()}, {os.cpu_count()} cores",
  }


def distinct(records: Sequence[Mapping[str, Any]], describe: Callable[[Mapping[str, Any]], str]) -> list[str]:
  """The distinct descriptions of the completed records, in first-seen order."""
  return list(dict.fromkeys(describe(r) for r in records if r.get("status") == "completed"))


def differences(records: Sequence[Mapping[str, Any]]) -> list[str]:
  """What keeps completed trials' timings from being comparable: different code, machines or backends."""
  out = []
  codes = distinct(records, lambda r: code_key(r.get("code")))
  if len(codes) > 1:
    out.append(f"the trials ran on {len(codes)} different code versions: " + " | ".join(codes))
  mixed = [r["name"] for r in records if r.get("status") == "completed" and len(r.get("code_sources", ())) > 1]
  if mixed:
    out.append(
      f"{len(mixed)} trial(s) resumed across a code change, their epochs ran different code: {', '.join(mixed)}"
    )
  machines = distinct(records, lambda r: r.get("machine", "?"))
  if len(machines) > 1:
    out.append(f"the trials ran on {len(machines)} different machines: " + " | ".join(machines))
  backends = distinct(records, lambda r: f"{r.get('backend', '?')} ({r.get('device', '?')})")
  if len(backends) > 1:
    out.append(f"the trials ran on {len(backends)} different backends: " + " | ".join(backends))
  return out
