"""The documentation runs: every `python -m convnet...` command in README.md, docs/*.md and
experiments/*/README.md, the README's Python block, and the blocks that use an exported model.

Every command is parsed with its module's own flags and builds its model(s) here, in-process. Then,
in a scratch directory, the commands run for real as written: the README's main job (the smoke
sweep, on its real-data subset), the tools (model_table, report, pruning, visualize, walkthrough), and
single runs on a small subset of the data (the same command with a few --config.dataset/num_epochs flags
added; a command whose config equals one's already run, only its --workdir differing, gets a copy of
that run); the other sweeps and the benchmark only parse here (the full grid takes an hour; the
benchmark runs in test_benchmark.py). A tool's first command starts a Python of its own, its others start
in children forked from a Python that has imported the libraries they use (a Zygote): most of a tool's
second is that start-up. Last, the README's Python block runs as written. The docs' links lead to files
and headings that exist.
"""

import concurrent.futures
import functools
import importlib
import json
import os
from pathlib import Path
import queue
import re
import secrets
import select
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile

from conftest import REPO
import jax
import jax.numpy as jnp
import pytest

from convnet import cli, configuration, input_pipeline, models
from convnet.sweep import trials
from convnet.sweep.trials import expand

pytestmark = pytest.mark.docs

DOCS = [REPO / "README.md", *sorted(REPO.glob("docs/*.md")), *sorted(REPO.glob("experiments/*/README.md"))]
SMALL_RUN = [
  "--config.dataset.num_train_examples=256",
  "--config.dataset.num_test_examples=128",
  "--config.num_epochs=1",
  "--config.inference.seconds=0.1",  # measured, briefly,
  "--config.inference.batch_size=64",  # at a small batch (1,024 bfloat16 images take ~0.8 s a call here)
]


def shell_commands(line: str) -> list[list[str]]:
  """The simple commands of a shell line (split at ;, &&, || and &, quotes respected), as words."""
  lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
  lexer.whitespace_split = True
  lexer.commenters = ""
  commands, words = [], []
  for token in lexer:
    if token in (";", "&&", "||", "&", "|"):
      commands.append(words)
      words = []
    else:
      words.append(token)
  return [w for w in [*commands, words] if w]


def documented_commands() -> list[tuple[str, list[str], dict[str, str]]]:
  """(where, argv, environment) for every `[VAR=value ...] python -m convnet.X ...` in a code block or
  inline code span of the docs."""
  found = []
  for doc in DOCS:
    text = doc.read_text()
    blocks = re.findall(r"```[a-z]*\n(.*?)```", text, re.S)
    spans = re.findall(r"(?<!`)`([^`\n]+)`(?!`)", re.sub(r"```.*?```", "", text, flags=re.S))
    lines = [line for block in blocks for line in block.replace("\\\n", " ").splitlines()] + spans
    for line in lines:
      for words in shell_commands(re.split(r"\s#\s", line)[0]):
        part = shlex.join(words)
        env = {}
        if words[:1] == ["time"]:  # the shell's timer, around a documented command
          words.pop(0)
        while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
          name, _, value = words.pop(0).partition("=")
          env[name] = value
        if len(words) > 2 and words[0].endswith("python") and words[1] == "-m" and words[2].startswith("convnet."):
          found.append((f"{doc.relative_to(REPO)}: {part.strip()}", words[2:], env))
  return found


COMMANDS = documented_commands()


def documented_in(doc: str) -> list[tuple[list[str], dict[str, str]]]:
  """(argv, environment) of the commands that ``doc`` (a path from the repository's root) holds."""
  return [(argv, env) for where, argv, env in COMMANDS if where.startswith(f"{doc}: ")]


def test_the_docs_hold_the_commands_we_expect():
  modules = {argv[0] for _, argv, _ in COMMANDS}
  assert {"convnet.main", "convnet.model_table", "convnet.report", "convnet.visualize", "convnet.walkthrough",
          "convnet.benchmark", "convnet.pruning", "convnet.predict", "convnet.export", "convnet.latency"} <= modules  # fmt: skip
  assert len(COMMANDS) >= 25
  # The README: the main job (the smoke sweep) and the usage of the main commands; the rest is in docs/.
  readme = documented_in("README.md")
  assert any(argv[:2] == ["convnet.main", "--config=configs/sweep.py:smoke"] for argv, _ in readme)
  assert {"convnet.main", "convnet.model_table", "convnet.report", "convnet.visualize", "convnet.walkthrough"} <= {
    argv[0] for argv, _ in readme
  }
  devices = documented_in("docs/devices.md")
  assert any("XLA_FLAGS" in env for _, env in devices) and any("JAX_PROCESS_ID" in env for _, env in devices)
  assert any("--config.sweep.executor.name=ray" in argv for argv, _ in documented_in("docs/ray.md"))
  pruning = documented_in("docs/pruning.md")
  assert any("--config.sweep.prune.method=pareto" in argv for argv, _ in pruning)
  assert any(argv[0] == "convnet.pruning" for argv, _ in pruning)
  assert any(argv[0] == "convnet.benchmark" for argv, _ in documented_in("docs/benchmarks.md"))
  # The README's map names every page of docs/.
  text = (REPO / "README.md").read_text()
  pages = sorted(REPO.glob("docs/*.md"))
  assert pages and all(f"](docs/{page.name})" in text for page in pages)


def heading_anchors(path: Path) -> set[str]:
  """The anchors GitHub gives a Markdown file's headings (lower case, punctuation dropped, spaces as '-')."""
  text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
  return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in re.findall(r"^#+ (.*)$", text, re.M)}


def test_the_docs_links_lead_to_files_and_headings_that_exist():
  broken = []
  for doc in DOCS:
    for target in re.findall(r"\]\(([^)\s]+)\)", re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)):
      if re.match(r"[a-z]+:", target):  # https:, mailto:
        continue
      path, _, anchor = target.partition("#")
      destination = (doc.parent / path) if path else doc
      missing = not destination.exists()
      unknown = not missing and anchor and destination.suffix == ".md" and anchor not in heading_anchors(destination)
      if missing or unknown:
        broken.append(f"{doc.relative_to(REPO)}: {target}")
  assert not broken


def build(config) -> int:
  """Checks a run's config and builds its model on the data's shape (abstractly: no compile); its parameter count."""
  config = config.to_dict()
  configuration.check_config(config)
  image_shape, num_classes = input_pipeline.peek_shape(config["dataset"])
  kwargs = configuration.model_kwargs(config, num_classes)
  return build_model(tuple(sorted(kwargs.items())), tuple(image_shape))


@functools.cache  # each architecture once: a sweep repeats them over seeds, the docs over commands
def build_model(kwargs: tuple, image_shape: tuple) -> int:
  kwargs = dict(kwargs)
  models.layer_specs(kwargs, image_shape)
  variables = jax.eval_shape(models.ConvNet(**kwargs).init, jax.random.PRNGKey(0), jnp.zeros((1, *image_shape)))
  return models.count_params(variables["params"])


@pytest.mark.parametrize("where, argv, env", COMMANDS, ids=[w for w, _, _ in COMMANDS])
def test_each_documented_command_parses_and_builds_its_model(real_data_dir, where, argv, env):
  module = importlib.import_module(argv[0])
  values = cli.parse(argv, module.define_flags, getattr(module, "ARGUMENTS", None))
  if "config" in values and values.config is not None:
    config = values.config
    expanded = expand(config) if "sweep" in config else [trials.Trial("run", {}, config)]
    built = [build(trial.config) for trial in expanded]
    assert all(count > 0 for count in built)


def command_env(env: dict[str, str]) -> dict[str, str]:
  # A local Ray (--config.sweep.executor.name=ray) with a token of its own: nothing written under the user's home.
  return {**os.environ, "PYTHONPATH": str(REPO / "src"), "RAY_AUTH_TOKEN": secrets.token_hex(16), **env}


def run_here(cwd: Path, argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", *argv], cwd=cwd, env=command_env(env), capture_output=True, text=True,
                        timeout=600)  # fmt: skip


# The libraries that the tools import, ~0.6 s of CPU a start (convnet itself takes 0.1 s).
LIBRARIES = ("jax", "jax.numpy", "flax.linen", "optax", "orbax.checkpoint", "matplotlib.pyplot", "PIL.Image",
             "ml_collections", "absl.app", "absl.flags")  # fmt: skip
ZYGOTE = """
import importlib, json, os, runpy, sys
for name in sys.argv[1:]:
  importlib.import_module(name)
for line in sys.stdin:  # one command at a time: [argv, cwd, env, stdout file, stderr file]
  argv, cwd, env, out, err = json.loads(line)
  pid = os.fork()
  if pid == 0:  # as `python -m` runs a module, in the command's directory and environment
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    for fd, path in ((1, out), (2, err)):
      os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
    sys.argv, sys.path[0] = list(argv), cwd
    runpy.run_module(argv[0], run_name="__main__", alter_sys=True)
    sys.exit()
  print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
"""


class Zygote:
  """A Python that has imported LIBRARIES and runs commands one at a time, each in a child forked from it: a
  command as written (its module run as `python -m` runs it, convnet imported afresh, its own working directory,
  environment, exit status and output), without the libraries' start-up each time."""

  def __init__(self, cwd: Path):
    self.process = subprocess.Popen([sys.executable, "-c", ZYGOTE, *LIBRARIES], cwd=cwd, env=command_env({}),
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    self.output = Path(tempfile.mkdtemp(prefix="zygote-"))

  def run(self, cwd: Path, argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    out, err = self.output / "stdout", self.output / "stderr"
    self.process.stdin.write(json.dumps([argv, str(cwd), command_env(env), str(out), str(err)]) + "\n")
    self.process.stdin.flush()
    if not select.select([self.process.stdout], [], [], 600)[0]:
      self.close()
      raise TimeoutError(f"{argv} ran past 600 s")
    answer = self.process.stdout.readline()
    if not answer:  # it could not import LIBRARIES (its traceback is above)
      raise RuntimeError(f"the zygote stopped with exit status {self.process.wait()}")
    return subprocess.CompletedProcess(argv, int(answer), out.read_text(), err.read_text())

  def close(self) -> None:
    if self.process.poll() is None:
      os.killpg(self.process.pid, signal.SIGKILL)  # the zygote and a child that hangs
    self.process.wait()
    shutil.rmtree(self.output, ignore_errors=True)


def flag_value(argv: list[str], name: str, default: str | None = None) -> str | None:
  """The value of the first ``--name=VALUE`` in ``argv``, or ``default``."""
  return next((a.split("=", 1)[1] for a in argv if a.startswith(f"--{name}=")), default)


def writes_to(argv: list[str]) -> str:
  """Where a command writes: its output, or, without one, its workdir."""
  return flag_value(argv, "out", flag_value(argv, "workdir", repr(argv)))


def is_sweep(argv: list[str]) -> bool:
  return any(a.startswith("--config=configs/sweep.py") for a in argv)


def run_in_groups(cwd: Path, jobs: list[tuple[list[str], dict[str, str]]], key=writes_to, zygotes=False) -> None:
  """Runs the commands two at a time (they spend most of their time compiling), those of one ``key`` (by
  default: those that write to one place, one writer) one after another, in order; each must succeed.
  ``zygotes``: each module's first command in a Python of its own (as a user's would start), the others in
  children of a Zygote."""
  groups: dict[str, list] = {}
  for argv, env in jobs:
    group = groups.setdefault(key(argv), [])
    if (argv, env) not in group:
      group.append((argv, env))
  free, started = queue.Queue(), set()
  for _ in range(2 if zygotes else 0):
    free.put(Zygote(cwd))

  def run(argv, env):
    first = argv[0] not in started
    started.add(argv[0])
    if first or not zygotes:
      return run_here(cwd, argv, env)
    zygote = free.get()  # two threads, two zygotes: one is free
    try:
      return zygote.run(cwd, argv, env)
    finally:
      free.put(zygote)

  def run_group(group):
    return [(argv, run(argv, env)) for argv, env in group]

  longest_first = sorted(groups.values(), key=len, reverse=True)  # so that the two end together
  try:
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
      for argv, result in (item for group in pool.map(run_group, longest_first) for item in group):
        assert result.returncode == 0, f"{argv}:\n{result.stderr[-3000:]}"
  finally:
    while not free.empty():
      free.get().close()


@pytest.fixture(scope="module")
def workspace(real_data_dir, tmp_path_factory) -> Path:
  """A scratch directory where the documented commands ran, mains first (later tools read their runs)."""
  cwd = tmp_path_factory.mktemp("docs")
  # The two-host commands need two machines: test_devices runs them as two processes on localhost.
  runnable = [(argv, env) for _, argv, env in COMMANDS if "JAX_PROCESS_ID" not in env]
  mains = [(argv, env) for argv, env in runnable if argv[0] == "convnet.main"]
  others = [(argv, env) for argv, env in runnable if argv[0] not in ("convnet.main", "convnet.benchmark")]
  jobs, twins = [], {}
  for argv, env in mains:
    config = cli.parse(argv, importlib.import_module("convnet.main").define_flags).config
    if "sweep" not in config:
      argv = argv + SMALL_RUN
      config = cli.parse(argv, importlib.import_module("convnet.main").define_flags).config
    elif config.dataset.num_train_examples is None:  # a full sweep: parsed and built only (above)
      continue
    # A command whose config and environment equal one's already run (only its --workdir differs) runs once;
    # its twins get a copy of that run's directory.
    key = json.dumps([config.to_dict(), env], sort_keys=True, default=str)
    twins.setdefault(key, []).append(flag_value(argv, "workdir"))
    if len(twins[key]) == 1:
      jobs.append((argv, env))
  # The sweeps (the smoke sweep, on Ray, with two seeds) one after another, the README's first, beside the single
  # runs: they build the same programs, which the later ones load from the session's compilation cache (side by
  # side, each compiled them all: ~25 s of CPU, the Ray one's ~2.5x slower).
  jobs.sort(key=lambda job: not is_sweep(job[0]))  # the long ones first
  run_in_groups(cwd, jobs, key=lambda argv: "sweeps" if is_sweep(argv) else writes_to(argv))
  for first, *copies in twins.values():
    for copy in dict.fromkeys(copies):  # the same command in two docs: one copy
      if copy != first:
        shutil.copytree(cwd / first, cwd / copy)
  # What the report commands read (their sweeps take an hour or more): the smoke sweep's results.
  for name in ("sweep", "depth", "pruned", "wide", "pruned_2_3", "sweep_2"):
    shutil.copytree(cwd / "runs" / "smoke", cwd / "runs" / name, dirs_exist_ok=True)
  for recorded in ("experiments/fashion_mnist_sweet_spot", "experiments/inference"):  # the replays of pruning read
    shutil.copytree(REPO / recorded, cwd / recorded, dirs_exist_ok=True)  # the recorded grid; predict, the pictures
  run_in_groups(cwd, others, zygotes=True)  # tools: ~40 commands, a second or two each, most of it start-up
  return cwd


def test_documented_commands_run_as_written(workspace):
  assert (workspace / "runs" / "smoke" / "report.md").is_file()
  assert "test_accuracy" in (workspace / "runs" / "default" / "summary.json").read_text()
  assert (workspace / "experiments" / "visualize" / "activations.png").is_file()
  assert json.loads((workspace / "runs" / "two" / "summary.json").read_text())["mesh"] == {"data": 2}


def python_blocks(doc: Path) -> list[str]:
  return re.findall(r"```python\n(.*?)```", doc.read_text(), re.S)


def readme_python_block() -> str:
  blocks = python_blocks(REPO / "README.md")
  assert len(blocks) == 2, "README.md should have two Python blocks: convnet in your code, the exported model"
  return blocks[0]


def test_the_readme_python_block_runs_as_written(workspace):
  # Beside a clone of the repository named convnet (as `git clone` names it), with the installed package:
  # the src layout keeps the folder from shadowing the package.
  clone = workspace / "convnet"
  if not clone.exists():
    clone.symlink_to(REPO, target_is_directory=True)
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  result = subprocess.run([sys.executable, "-c", readme_python_block()], cwd=workspace, env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
  assert result.returncode == 0, result.stderr[-3000:]
  assert re.search(r"\d+\.\d+% test accuracy", result.stdout), result.stdout


EXPORTED_BLOCKS = [(doc, block) for doc in DOCS for block in python_blocks(doc) if "jax.export.deserialize" in block]


@pytest.mark.parametrize("doc, block", EXPORTED_BLOCKS, ids=[str(d.relative_to(REPO)) for d, _ in EXPORTED_BLOCKS])
def test_the_blocks_that_use_an_exported_model_run_as_written_without_convnet(workspace, doc, block):
  # After the documented export command wrote exported/model.jax; convnet is not on the path, and not imported.
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  code = block + "\nimport sys\nassert not {'convnet', 'flax', 'optax'} & {m.split('.')[0] for m in sys.modules}\n"
  result = subprocess.run([sys.executable, "-c", code], cwd=workspace, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.strip() in input_pipeline.FASHION_MNIST_CLASSES


def test_ci_runs_the_readme_test_command_verbatim():
  setup = [line for block in re.findall(r"```\n(.*?)```", (REPO / "README.md").read_text(), re.S)
           for line in block.splitlines() if line.startswith("apt-get update")]  # fmt: skip
  assert len(setup) == 2 and "-c constraints.txt" in setup[0] and setup[1].endswith("-m pytest")
  assert setup[1] in (REPO / ".ci" / "run").read_text()
