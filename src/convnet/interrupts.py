"""Ctrl-C at safe points: a first SIGINT is noted and acted on between compiled calls, not inside them.

Python raises KeyboardInterrupt wherever the main thread happens to be, and in a training run that is
often inside a compiled call, a checkpoint write or a library's background machinery, which can then
abort the whole process at exit instead of ending cleanly. Inside :func:`deferred`, a first Ctrl-C
only sets a flag; the training loop calls :func:`check` at its safe points (between compiled calls,
after an epoch's records are written), which raises KeyboardInterrupt there. A second Ctrl-C raises
at once, for a user who will not wait; one that comes after the block's last check is raised as the
block ends.
"""

import contextlib
import signal
import threading

_requested = threading.Event()


@contextlib.contextmanager
def deferred():
  """Within the block, a first SIGINT is deferred to the next :func:`check` (main thread only)."""
  if threading.current_thread() is not threading.main_thread():
    yield  # signals reach only the main thread: nothing to defer
    return

  def note(signum, frame):
    if _requested.is_set():
      raise KeyboardInterrupt
    _requested.set()

  previous = signal.signal(signal.SIGINT, note)
  try:
    yield
  finally:
    signal.signal(signal.SIGINT, previous)
  check()  # a Ctrl-C that came after the block's last check is not lost


def check() -> None:
  """Raises KeyboardInterrupt if a Ctrl-C came since the block began (a safe point to stop at)."""
  if _requested.is_set():
    _requested.clear()
    raise KeyboardInterrupt


def request() -> None:
  """Asks every running loop to stop at its next :func:`check` (as a Ctrl-C does): how the local executor
  stops the trials running beside one that was interrupted."""
  _requested.set()


def requested() -> bool:
  """Whether a stop was asked for and not yet taken by a :func:`check`."""
  return _requested.is_set()


def clear() -> None:
  """Forgets a stop that was asked for (its caller is stopping anyway)."""
  _requested.clear()
