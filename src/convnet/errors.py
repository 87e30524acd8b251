"""The errors convnet raises for bad input; entry points print their one-line message and exit 1."""

import os


class ConvnetError(Exception):
  """Base class: a problem the user can fix, described in one line."""


class ConfigError(ConvnetError, ValueError):
  """A config value that is not allowed (names the field, the value and what is allowed)."""


class DataError(ConvnetError):
  """Missing, truncated or corrupt data (names the file and what is wrong)."""


class TrainingError(ConvnetError):
  """Training cannot go on, e.g. a NaN loss."""


class LockError(ConvnetError):
  """Another process works in this workdir (names the holder)."""


class StorageError(ConvnetError):
  """The disk is full, or a file cannot be written (names the file); nothing written before is lost."""


class Interrupted(ConvnetError):
  """Stopped by Ctrl-C (names what was done); the entry point exits with status 130."""


STORAGE_ERRNOS = (28, 122, 30)  # ENOSPC, EDQUOT, EROFS
STORAGE_MESSAGES = ("No space left on device", "Disk quot", "Read-only file system")


def storage_problem(error: BaseException) -> str | None:
  """One line if ``error`` (or what caused it) is a full disk, a quota or a read-only file system, else None.

  Orbax and TensorStore wrap the OSError in their own exception types, so the message is checked too.
  """
  seen = error
  while seen is not None:
    if isinstance(seen, OSError) and seen.errno in STORAGE_ERRNOS:
      where = f"{seen.filename}: " if seen.filename else ""
      return f"{where}{seen.strerror or os.strerror(seen.errno)}"
    seen = seen.__cause__ or seen.__context__
  text = str(error)
  for message in STORAGE_MESSAGES:
    if message in text:
      return next((line.strip() for line in text.splitlines() if message in line), message)[:300]
  return None
