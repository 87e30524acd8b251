"""One writer per workdir: an exclusive lock that dies with its process.

A run or a sweep holds ``DIR/.lock`` with ``fcntl.flock`` for as long as it works in ``DIR``. The
kernel releases the lock when the process ends, however it ends (``kill -9`` included), so a stale
lock is never left behind; the file itself stays and only says who held it last. A second process
that asks for a held lock gets :class:`~convnet.errors.LockError` naming the holder (pid, host,
command, since when).

A process that coordinates others (a sweep driver whose workers write into trial directories under
the sweep directory it holds) lets its workers skip their own lock: ``train_and_evaluate(...,
lock=False)``.
"""

import contextlib
import datetime
import os
from pathlib import Path
import socket
import sys
import time

from convnet.errors import ConfigError, LockError

LOCK_FILE = ".lock"


@contextlib.contextmanager
def hold(workdir: str | os.PathLike, wait: float = 0.0):
  """Holds ``workdir``'s lock for the ``with`` block (creating the workdir); LockError if another process
  holds it (after waiting up to ``wait`` seconds for it to let go, e.g. a worker of a killed sweep that its
  cluster is stopping)."""
  import fcntl  # POSIX only; imported here so that importing convnet works anywhere

  check_workdir(workdir)
  path = Path(workdir) / LOCK_FILE
  path.parent.mkdir(parents=True, exist_ok=True)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
  try:
    deadline = time.monotonic() + wait
    while True:
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        break
      except BlockingIOError:
        if time.monotonic() < deadline:
          time.sleep(0.5)
          continue
      who = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
      raise LockError(f"{workdir} is in use by {who}; wait for it to finish, or stop it (a re-run resumes)") from None
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    command = " ".join([os.path.basename(sys.executable), *sys.argv])[:300]
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} ({command}), since {started}\n".encode(), 0)
    yield
  finally:
    os.close(fd)  # closing the descriptor releases the lock


def check_workdir(workdir: str | os.PathLike) -> None:
  """ConfigError if ``workdir`` cannot be a run's or sweep's directory (a file; a symlink to nothing)."""
  if Path(workdir).exists() and not Path(workdir).is_dir():
    raise ConfigError(f"--workdir={workdir} is a file, not a directory; give a directory (new or a run's)")
  for link in (Path(workdir), *Path(workdir).parents):
    if link.is_symlink() and not link.exists():  # mkdir would say only "File exists"
      where = f"--workdir={workdir}" if link == Path(workdir) else f"{link} (in --workdir={workdir})"
      raise ConfigError(
        f"{where} is a symlink to {os.readlink(link)}, which does not exist; "
        "point it at an existing directory, or remove it"
      )


def holder(workdir: str | os.PathLike) -> str:
  """Who holds (or last held) ``workdir``'s lock, as written in its lock file; '' if there is none."""
  try:
    return (Path(workdir) / LOCK_FILE).read_text(errors="replace").strip()
  except OSError:
    return ""
