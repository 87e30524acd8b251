"""Files that survive a ``kill -9``: JSON, JSON lines and whole-file replacement.

A JSON line is written with one ``write`` and fsynced; a torn last line (no newline) is ignored when
reading and cut off before the next append; whole files are replaced with write-to-temp, fsync,
rename, so a reader sees the old file or the new one, never a mix.
"""

from collections.abc import Callable, Iterable, Iterator, Mapping
import contextlib
import json
import math
import os
from pathlib import Path
import tempfile
from typing import Any

from convnet.errors import DataError


def json_safe(value: Any) -> Any:
  """JSON-safe copy: tuples to lists, NaN/inf to None, numpy/jax scalars to Python numbers."""
  if isinstance(value, Mapping):
    return {str(k): json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [json_safe(v) for v in value]
  if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


@contextlib.contextmanager
def atomic_replace(path: str | os.PathLike) -> Iterator[str]:
  """A temporary file beside ``path`` (the usual mode) for the ``with`` block to write; on success it is
  fsynced and renamed over ``path``, so readers see the old or the new file, never a mix; on failure removed."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with named(path):
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
      os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes it private (0600); give it the usual mode
      os.close(fd)
      yield tmp
      with open(tmp, "rb") as f:
        os.fsync(f.fileno())
      os.replace(tmp, path)
    except BaseException:
      Path(tmp).unlink(missing_ok=True)
      raise


@contextlib.contextmanager
def named(path: str | os.PathLike) -> Iterator[None]:
  """An OSError raised in the block without a file name (a write, an fsync: a full disk) gets ``path``'s,
  so that its one-line message says which file could not be written."""
  try:
    yield
  except OSError as e:
    if e.filename is not None or e.errno is None:
      raise
    raise OSError(e.errno, e.strerror or os.strerror(e.errno), str(path)) from e


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
  """Replaces ``path`` with ``text`` so that readers see the old or the new file, never a mix."""
  with atomic_replace(path) as tmp:
    Path(tmp).write_text(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
  """Replaces ``path`` with ``data`` so that readers see the old or the new file, never a mix."""
  with atomic_replace(path) as tmp:
    Path(tmp).write_bytes(data)


def _umask() -> int:
  """The process's umask (read by setting it and setting it back: Python has no getter)."""
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


def flatten_dict(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """{'a': {'b': 1}} -> {'a.b': 1}."""
  out = {}
  for key, value in tree.items():
    if isinstance(value, Mapping):
      out.update(flatten_dict(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def write_json(path: str | os.PathLike, data: Mapping[str, Any]) -> None:
  atomic_write_text(path, json.dumps(json_safe(data), indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike) -> dict[str, Any] | None:
  """The JSON object in ``path``, or None if the file does not exist; DataError if it is not JSON."""
  try:
    value = json.loads(Path(path).read_text())
  except FileNotFoundError:
    return None
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise DataError(f"{path}: corrupt, not JSON ({e}); move it away to start this run afresh") from None
  if not isinstance(value, dict):
    raise DataError(f"{path}: corrupt, holds a {type(value).__name__} instead of a JSON object")
  return value


def read_jsonl(path: str | os.PathLike, on_bad_line: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
  """All complete lines of a JSON-lines file; a torn last line (no newline) is ignored.

  A garbled line elsewhere raises DataError naming the file and the line, or, with ``on_bad_line``,
  is passed over after ``on_bad_line('FILE:LINE: what is wrong')``.
  """
  try:
    text = Path(path).read_text(errors="replace")
  except FileNotFoundError:
    return []
  records = []
  for number, line in enumerate(text.split("\n")[:-1], start=1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
      if not isinstance(record, dict):
        raise ValueError(f"a {type(record).__name__}, not a JSON object")
    except ValueError as e:
      problem = f"{path}:{number}: corrupt line ({str(e).splitlines()[0][:120]})"
      if on_bad_line is None:
        raise DataError(problem + "; remove or repair that line") from None
      on_bad_line(problem)
      continue
    records.append(record)
  return records


def append_jsonl(path: str | os.PathLike, record: Mapping[str, Any]) -> None:
  """Appends one line with a single write and fsync, first cutting off a torn last line."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  line = (json.dumps(json_safe(record), sort_keys=True) + "\n").encode()
  with named(path), open(path, "ab+") as f:
    size = f.seek(0, os.SEEK_END)
    if size:
      f.seek(size - 1)
      if f.read(1) != b"\n":  # a torn line from a killed writer: cut it off
        f.seek(0)
        f.truncate(f.read().rfind(b"\n") + 1)
    f.seek(0, os.SEEK_END)
    f.write(line)
    f.flush()
    os.fsync(f.fileno())


def rewrite_jsonl(path: str | os.PathLike, records: Iterable[Mapping[str, Any]]) -> None:
  """Atomically replaces a JSON-lines file with ``records``."""
  atomic_write_text(path, "".join(json.dumps(json_safe(r), sort_keys=True) + "\n" for r in records))
