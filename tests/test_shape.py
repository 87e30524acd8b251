"""The package's shape: no import circle, modules of one concept (~300 lines at most), no convnet module
imported inside a function, third-party imports inside functions only for optional engines and the
libraries that are slow to import, and no file of the repository that points outside it."""

import ast
from pathlib import Path
import re
import subprocess

from conftest import REPO

PACKAGE = REPO / "src" / "convnet"
MAX_LINES = 300
# Imported inside functions on purpose: optional engines (extras), and libraries slow to import that
# most commands never need (checkpoints, TensorBoard, plots, the progress bar), or that must not start
# before convnet has set up the platform (jax inside convnet.runtime and the benchmark's workers).
LAZY_OK = {
  "ray", "torch", "tensorflow", "tensorflow_datasets", "nbclient", "nbformat",  # optional engines
  "orbax", "tensorboardX", "google", "matplotlib", "tqdm",  # slow to import, used by some commands only
  "jax", "flax", "numpy",  # the benchmark's and peers' worker processes; runtime's platform set-up
  "os", "sys", "importlib", "multiprocessing", "fcntl",  # the standard library
}  # fmt: skip


def modules() -> dict[str, Path]:
  found = {}
  for path in PACKAGE.rglob("*.py"):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    if "configs" in parts:
      continue
    name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    found[name] = path
  return found


def imports(path: Path, known) -> tuple[set[str], list[tuple[int, str]]]:
  """(the convnet modules ``path`` imports anywhere, the imports inside its functions as (line, module))."""
  tree = ast.parse(path.read_text())
  inside = set()
  for node in ast.walk(tree):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
      inside.update(id(sub) for sub in ast.walk(node) if isinstance(sub, (ast.Import, ast.ImportFrom)))
  targets, lazy = set(), []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module:
      names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
    else:
      continue
    for name in names:
      while name and name not in known and "." in name:
        name = name.rsplit(".", 1)[0]
      if name in known and name != "convnet":
        targets.add(name)
    if id(node) in inside:
      lazy.append((node.lineno, names[-1] if isinstance(node, ast.ImportFrom) else names[0]))
  return targets, lazy


def test_no_import_circle_in_the_package():
  known = modules()
  graph = {name: imports(path, known)[0] - {name} for name, path in known.items()}
  # A package's __init__ is imported with each of its modules: an edge to the package is one to it.
  state, stack, circles = {}, [], []

  def visit(name):
    state[name] = "open"
    stack.append(name)
    for target in sorted(graph[name]):
      if state.get(target) == "open":
        circles.append(stack[stack.index(target) :] + [target])
      elif target not in state:
        visit(target)
    stack.pop()
    state[name] = "done"

  for name in sorted(graph):
    if name not in state:
      visit(name)
  assert not circles, "import circles: " + "; ".join(" -> ".join(c) for c in circles)


def test_modules_are_short_and_import_inside_functions_only_what_may_wait():
  known = modules()
  for path in known.values():
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(REPO)} has {lines} lines; split it by concept"
    for line, module in imports(path, known)[1]:
      where = f"{path.relative_to(REPO)}:{line} imports {module} inside a function"
      assert not module.startswith("convnet"), where + ": import convnet's own modules at the top"
      assert module.split(".")[0] in LAZY_OK, where + ": import it at the top (or name why it waits, in LAZY_OK)"


def test_no_file_points_outside_the_repository():
  tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True).stdout.split()
  if not tracked:  # not a git checkout (an unpacked copy): every text file under the repository
    tracked = [
      str(p.relative_to(REPO))
      for p in REPO.rglob("*")
      if p.is_file()
      and not any(part.startswith(".") or part in ("__pycache__", "runs") for part in p.relative_to(REPO).parts)
    ]
  outside = re.compile(r"\.\./shared|/work/|\bshared/(ARCHITECTURE|STYLE|PERFORMANCE_NOTES)")
  for name in tracked:
    path = REPO / name
    if path == Path(__file__):  # names the patterns it looks for
      continue
    if path.suffix in (".py", ".md", ".toml", ".txt", ".ipynb", "") and path.is_file() and not path.is_symlink():
      text = path.read_text(errors="replace")
      assert not outside.search(text), f"{name} points outside the repository: {outside.search(text).group(0)}"
