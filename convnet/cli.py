"""What every command-line entry shares: flag parsing and errors as one line with exit status 1.

Entry points call :func:`run` instead of ``absl.app.run``: a bad ``--config.x=y`` (unknown field,
unparsable value) or a :class:`~convnet.errors.ConvnetError` raised by the job is printed as one
``error: ...`` line on stderr instead of a traceback.
"""

from collections.abc import Callable, Sequence
import importlib.util
import logging
import os
from pathlib import Path
import re
import sys

from absl import app, flags
from absl import logging as absl_logging

from convnet.errors import ConvnetError


def _unknown_field(error: Exception, argv: Sequence[str]) -> str:
  """'ARG: no such config field' for the argument that ``error`` (from ml_collections) is about."""
  text = str(error)
  hint = re.search(r'Did you mean "([^"]+)"', text)
  suffix = f' (did you mean "{hint.group(1)}"?)' if hint else ""
  for arg in argv:
    name = arg.split("=", 1)[0]
    if name.startswith("--config.") and re.search(rf"\b{re.escape(name.rsplit('.', 1)[-1])}\b", text):
      return f"{arg}: no such config field{suffix}"
  return f"unknown config field {text.splitlines()[0]}{suffix}"


def fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(1)


def parse_flags(argv: Sequence[str]) -> list[str]:
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError) as e:
    fail(_unknown_field(e, argv))
  except (flags.Error, TypeError, ValueError) as e:
    fail(str(e).splitlines()[0] if str(e) else type(e).__name__)


def run(main: Callable[[list[str]], None], allow_positional: bool = False) -> None:
  """``absl.app.run(main)`` with one-line errors for bad flags and ConvnetErrors."""

  def guarded(argv):
    # Our own progress at INFO; libraries at WARNING (orbax logs every step of every checkpoint).
    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("convnet").setLevel(logging.INFO)
    if len(argv) > 1 and not allow_positional:
      fail(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
      main(argv)
    except ConvnetError as e:
      fail(str(e))

  app.run(guarded, flags_parser=parse_flags)


def load_config(path: str | os.PathLike):
  """Loads a config file by path, as ``--config=PATH[:VARIANT]`` does: ``get_config(VARIANT)``."""
  path, _, variant = str(path).partition(":")
  spec = importlib.util.spec_from_file_location(f"_convnet_config_{Path(path).stem}", path)
  if spec is None or not Path(path).is_file():
    raise FileNotFoundError(f"{path}: config file not found")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant) if variant else module.get_config()
