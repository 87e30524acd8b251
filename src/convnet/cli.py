"""What every command-line entry shares: flags, the XLA set-up, and errors as one line with exit status 1.

Every ``python -m convnet.X`` module follows one pattern::

    def define_flags(values: flags.FlagValues) -> None:   # its flags, on the FlagValues it is given
      cli.define_config(values)                           # --config=PATH[:VARIANT] with --config.x=y
      flags.DEFINE_string("workdir", None, "...", flag_values=values)

    def main(values: flags.FlagValues) -> None: ...      # the job, from the parsed flags

    if __name__ == "__main__":
      cli.run(main, define_flags)

Importing the module defines nothing; :func:`run` sets the XLA flags, defines and parses the flags,
and prints a bad flag, an unexpected argument or a :class:`~convnet.errors.ConvnetError` from the
job, a full disk or an unwritable file as one ``error: ...`` line on stderr (exit status 1; 130 for
Ctrl-C, with what to do next). ``--help`` lists the command's flags and, given ``--config=PATH``,
every field of that config. :func:`parse` parses into fresh FlagValues, for tests and tools that
check a command line without running it.
"""

from collections.abc import Callable, Iterator, Sequence
import contextlib
import logging
import re
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from convnet import configuration, runtime
from convnet.errors import ConfigError, ConvnetError, Interrupted, storage_problem
from convnet.rundir import files
from convnet.sweep import settings

DefineFlags = Callable[[flags.FlagValues], None]


def fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(1)


def define_config(values: flags.FlagValues, required: bool = True) -> None:
  """``--config=PATH[:VARIANT]`` (an ml_collections config file) and its ``--config.x=y`` overrides."""
  config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/default.py or configs/sweep.py:smoke.", flag_values=values
  )
  if required:
    flags.mark_flag_as_required("config", flag_values=values)


def _unknown_field(error: Exception, argv: Sequence[str]) -> str:
  """'ARG: no such config field' for the argument that ``error`` (from ml_collections) is about."""
  text = str(error)
  hint = re.search(r'Did you mean "([^"]+)"', text)
  suffix = f' (did you mean "{hint.group(1)}"?)' if hint else ""
  for arg in argv:
    name = arg.split("=", 1)[0]
    if name.startswith("--config.") and re.search(rf"\b{re.escape(name.rsplit('.', 1)[-1])}\b", text):
      moved = settings.moved_to(name[len("--config.") :])
      if moved:
        suffix = f"; sweep-level fields live under config.sweep now: --config.{moved}"
      return f"{arg}: no such config field{suffix}"
  return f"unknown config field {text.splitlines()[0]}{suffix}"


def _reason(error: Exception) -> str:
  """One line for a flag error. ml_collections wraps an error raised in a config file's get_config
  in the traceback's text; the reason is its last line."""
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  if not lines:
    return type(error).__name__
  if "Traceback (most recent call last)" in str(error):
    flag = lines[0].split(":", 1)[0]
    reason = re.sub(r"^[\w.]*(Error|Exception): ", "", lines[-1])
    return f"{flag}: {reason}"
  return lines[0]


def _resolve_config_path(argv: Sequence[str]) -> list[str]:
  """argv with ``--config=PATH[:VARIANT]``'s PATH resolved (a shipped config if not found from here)."""
  resolved = list(argv)
  for i, arg in enumerate(resolved):
    if arg.startswith("--config="):
      path, colon, variant = arg[len("--config=") :].partition(":")
      resolved[i] = f"--config={configuration.resolve_path(path)}{colon}{variant}"
    elif arg == "--config" and i + 1 < len(resolved):
      path, colon, variant = resolved[i + 1].partition(":")
      resolved[i + 1] = f"{configuration.resolve_path(path)}{colon}{variant}"
  return resolved


@contextlib.contextmanager
def _sys_argv(argv: list[str]) -> Iterator[None]:
  """ml_collections' config flag finds its --config.x=y overrides in sys.argv at parse time."""
  saved, sys.argv = sys.argv, argv
  try:
    yield
  finally:
    sys.argv = saved


def _positionals(values: flags.FlagValues, argv: Sequence[str]) -> list[int]:
  """Where in ``argv`` the arguments are that are neither flags nor a flag's value (``--workdir DIR``)."""
  found, expecting_value = [], False
  for i, arg in enumerate(argv[1:], start=1):
    if expecting_value:
      expecting_value = False
    elif arg.startswith("-"):
      name = arg.lstrip("-").split("=", 1)[0]
      expecting_value = "=" not in arg and name in values and not values[name].boolean
    else:
      found.append(i)
  return found


def _repeated(argv: Sequence[str]) -> dict[str, int]:
  """The flags that ``argv`` gives more than once, with how many times."""
  names = [arg.lstrip("-").split("=", 1)[0] for arg in argv[1:] if arg.startswith("-")]
  return {name: names.count(name) for name in names if names.count(name) > 1}


def _config_fields(argv: Sequence[str]) -> str:
  """``--config.FIELD=VALUE`` for every field of the config that ``argv`` gives (its overrides applied)."""
  given, taken = [argv[0]], False
  for arg in argv[1:]:
    if taken or arg.startswith("--config"):
      given.append(arg)
    taken = arg == "--config"  # --config PATH
  config = parse(given, lambda fresh: define_config(fresh, required=False)).config
  return "\n".join(f"  --config.{name}={value}" for name, value in files.flatten_dict(config.to_dict()).items())


def _help(values: flags.FlagValues, argv: Sequence[str]) -> str:
  """``--help``: the command's docstring and its flags (absl's own left out); for a command that takes
  ``--config``, how to see and override its fields, and the fields themselves when a config is given."""
  doc = (sys.modules["__main__"].__doc__ or "").strip()
  lines = [f"{doc}\n\nFlags:" if doc else "Flags:"]
  for module in values.flags_by_module_dict():
    if not module.startswith("absl."):  # --logtostderr and the like: not this command's
      shown = values.module_help(module).splitlines()
      lines += [line for line in shown if line.startswith(" ") and line.strip() != "(default: 'None')"]
  if "config" in values:
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    program = f"python -m {spec.name}" if spec is not None else "python -m convnet.main"
    lines.append(f"\n--config.FIELD=VALUE overrides a field; {program} --config=configs/default.py --help lists them")
    if any(arg == "--config" or arg.startswith("--config=") for arg in argv[1:]):
      lines += ["\nConfig fields:", _config_fields(argv)]
  return "\n".join(lines)


def _parse_into(values: flags.FlagValues, argv: Sequence[str], arguments: str | None = None) -> list[str]:
  helps = ("-h", "--help", "--helpshort", "-?")
  if any(arg in helps for arg in argv[1:]):  # absl's exits 1; help is no error
    print(_help(values, [arg for arg in argv if arg not in helps]))
    sys.exit(0)
  extra = _positionals(values, argv)
  if extra and arguments is None:
    flag = argv[extra[0] - 1]
    if flag.startswith("--config.") and "=" not in flag:  # --config.x 1: ml_collections wants --config.x=1
      fail(f"{flag} {argv[extra[0]]}: config fields take their value after '=': {flag}={argv[extra[0]]}")
    fail(f"unexpected argument {argv[extra[0]]!r}: this command takes flags only (--help lists them)")
  try:
    argv = _resolve_config_path(argv)
  except ConfigError as e:
    fail(str(e))
  with _sys_argv(argv):
    try:
      rest = values(argv)
      if "config" in values and values["config"].value is not None:
        values.config.get("seed")  # a config file that failed to load raises on first use: now, not mid-job
    except (AttributeError, KeyError) as e:
      fail(_unknown_field(e, argv))
    except (flags.Error, TypeError, ValueError, OSError) as e:
      missing = re.search(r"Flag --(\w+) must have a value other than None", str(e))
      fail(f"--{missing.group(1)} is required (--help lists the flags)" if missing else _reason(e))
  for name, count in _repeated(argv).items():
    # A repeated flag keeps its last value, but ml_collections joins a tuple field's values into one tuple.
    if name.startswith("config.") and name in values and isinstance(values[name], flags.MultiFlag):
      times = "twice" if count == 2 else f"{count} times"
      fail(f"--{name} is given {times}: its values were joined into {tuple(values[name].value)}; give it once")
  return rest


def parse(argv: Sequence[str], define_flags: DefineFlags, arguments: str | None = None) -> flags.FlagValues:
  """``argv`` (program name first) parsed into fresh FlagValues defined by ``define_flags`` (``arguments``:
  what a command that takes arguments besides its flags calls them, its module's ``ARGUMENTS``)."""
  values = flags.FlagValues()
  define_flags(values)
  _parse_into(values, argv, arguments)
  return values


def _quiet_closed_loops(hook):
  """``hook`` without the "Event loop is closed" tracebacks that TensorStore's callbacks raise when they
  reach an event loop orbax already closed (after a failed checkpoint save: the save's own error says it)."""

  def quiet(unraisable):
    if isinstance(unraisable.exc_value, RuntimeError) and str(unraisable.exc_value) == "Event loop is closed":
      return
    hook(unraisable)

  return quiet


def _orbax_leftovers(record: logging.LogRecord) -> bool:
  """False for asyncio's "Task exception was never retrieved" about an orbax write that failed: the failed
  checkpoint save already raised (and was said as one line); its tasks are collected later."""
  return not (record.getMessage().startswith("Task exception was never retrieved") and "orbax" in record.getMessage())


def run(main: Callable[..., None], define_flags: DefineFlags | None = None, arguments: str | None = None) -> None:
  """The entry point: XLA flags, then ``main(FLAGS)`` with one-line errors (see the module docstring).
  A command that takes arguments besides its flags names them (``arguments="IMAGE..."``) and is called
  as ``main(FLAGS, args)``; one without any refuses them."""
  if define_flags is not None:
    define_flags(flags.FLAGS)

  def guarded(argv):
    args = [arg for arg in argv[1:] if arg != "--"]
    if arguments is not None and not args:
      fail(f"give {arguments} after the flags (--help lists the flags)")
    config = flags.FLAGS["config"].value if "config" in flags.FLAGS else None
    asked = config if config is not None else {}
    runtime.configure_xla(asked.get("backend"), bool(asked.get("deterministic")))  # before JAX's backend starts
    # Our own progress at INFO; libraries at WARNING (orbax logs every step of every checkpoint).
    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("convnet").setLevel(logging.INFO)
    sys.unraisablehook = _quiet_closed_loops(sys.unraisablehook)
    logging.getLogger("asyncio").addFilter(_orbax_leftovers)
    try:
      main(flags.FLAGS, args) if arguments is not None else main(flags.FLAGS)
    except Interrupted as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(130)
    except KeyboardInterrupt:
      print("error: interrupted; re-run the same command to resume", file=sys.stderr)
      sys.exit(130)
    except ConvnetError as e:
      fail(str(e))
    except Exception as e:  # a full disk or an unwritable file, however deep it was raised: one line
      problem = storage_problem(e)
      if problem is None and isinstance(e, OSError) and e.filename:
        problem = f"{e.filename}: {e.strerror}"
      if problem is None:
        raise
      fail(f"{problem}; nothing already written is lost: fix it and re-run the same command to resume")

  app.run(guarded, flags_parser=lambda argv: _parse_into(flags.FLAGS, argv, arguments))
