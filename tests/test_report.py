"""Pareto front, sweet-spot rules and the report files, on hand-made results."""

import json
import os
import subprocess
import sys

from conftest import REPO
import pytest

from convnet.errors import ConfigError
from convnet.results import analysis, report
from convnet.rundir import files


def row(name, accuracy, seconds, accuracy_std=0.0):
  return analysis.ConfigResult(name, (name,), (0, 1), accuracy, accuracy_std, seconds, 0.0, 1000.0, 10, 100, 50)


def test_pareto_front_keeps_only_undominated_configurations():
  a, b = row("a", 0.90, 10), row("b", 0.91, 20)
  c = row("c", 0.89, 15)  # slower and worse than a
  d = row("d", 0.91, 25)  # as good as b, slower
  e = row("e", 0.80, 5)  # fastest: on the front however poor
  assert analysis.pareto_front([a, b, c, d, e]) == [e, a, b]


def test_sweet_spot_rules():
  a, b = row("a", 0.900, 10), row("b", 0.910, 20, accuracy_std=0.005)
  spot, why = analysis.sweet_spot([a, b], "within_std")
  assert spot is b and "within one standard deviation over seeds" in why and "most accurate: b, 91.00% ± 0.50" in why
  b_noisy = row("b", 0.910, 20, accuracy_std=0.02)
  assert analysis.sweet_spot([a, b_noisy], "within_std")[0] is a
  assert analysis.sweet_spot([a, b], "within_tolerance", 0.02)[0] is a
  assert analysis.sweet_spot([a, b], "within_tolerance", 0.005)[0] is b
  with pytest.raises(ConfigError, match="sweep.report.rule='best' is not allowed"):
    analysis.sweet_spot([a, b], "best")


def trial(name, seed, accuracy, seconds, status="completed"):
  return {
      "name": f"{name},seed={seed}", "configuration": name, "overrides": {"model.features": [int(name.split("=")[1])] * 2, "seed": seed},
      "seed": seed, "status": status, "test_accuracy": accuracy, "train_accuracy": accuracy + 0.02,
      "epoch_seconds": seconds, "examples_per_second": 60000 / seconds, "num_params": 1000, "flops_per_example": 2e6,
      "flatten_size": 400, "backend": "cpu", "device": "cpu:cpu", "machine": "test machine", "epoch": 2,
  }  # fmt: skip


RESULTS = [
    trial("features=16", 0, 0.89, 4.0), trial("features=16", 1, 0.91, 6.0),
    trial("features=64", 0, 0.91, 18.0), trial("features=64", 1, 0.91, 20.0),
    {"name": "features=9,seed=0", "configuration": "features=9", "overrides": {}, "seed": 0, "status": "failed", "error": "NaN/inf training loss"},
]  # fmt: skip


def test_aggregate_means_and_sample_std_over_completed_seeds():
  rows = {r.name: r for r in analysis.aggregate(RESULTS)}
  assert set(rows) == {"features=16", "features=64"}
  assert rows["features=16"].accuracy_mean == pytest.approx(0.90)
  assert rows["features=16"].accuracy_std == pytest.approx(0.0141421356, rel=1e-6)  # sample std of 0.89, 0.91
  assert rows["features=16"].seconds_mean == pytest.approx(5.0) and rows["features=64"].seeds == (0, 1)


def test_report_files_from_a_fixture(tmp_path):
  for r in RESULTS[:4]:
    for epoch, acc in ((1, r["test_accuracy"] - 0.03), (2, r["test_accuracy"])):
      files.append_jsonl(tmp_path / "trials" / r["name"] / "metrics.jsonl", {"epoch": epoch, "test_accuracy": acc})
  config = {"num_epochs": 2, "batch_size": 32, "sweep": {"report": {"rule": "within_std", "tolerance": 0.005}}}
  text = report.write_report(tmp_path, config, RESULTS).text
  assert "| features=16 ★ |" in text  # 0.90 ± 0.014 is within one std of 0.91 ± 0
  assert "| features=9,seed=0 | failed | NaN/inf training loss |" in text
  assert "Timings from: cpu backend, cpu:cpu, test machine" in text
  pandas = pytest.importorskip("pandas")
  frame = pandas.read_csv(tmp_path / "results.csv")
  assert len(frame) == 5 and list(frame["status"]).count("completed") == 4
  from PIL import Image

  for name in ("pareto.png", "learning_curves.png"):
    with Image.open(tmp_path / name) as image:
      image.verify()
      assert image.format == "PNG" and image.size[0] > 300 and image.size[1] > 200


def test_report_command_remakes_the_report_and_refuses_an_empty_dir(tmp_path):
  for r in RESULTS:
    files.append_jsonl(tmp_path / "results.jsonl", r)
  files.write_json(
    tmp_path / "config.json", {"num_epochs": 2, "sweep": {"report": {"rule": "within_tolerance", "tolerance": 0.001}}}
  )
  result = subprocess.run(
    [sys.executable, "-m", "convnet.report", f"--workdir={tmp_path}"], cwd=REPO, capture_output=True, text=True
  )
  assert result.returncode == 0, result.stderr
  assert "| features=64 ★ |" in (tmp_path / "report.md").read_text()
  empty = subprocess.run(
    [sys.executable, "-m", "convnet.report", f"--workdir={tmp_path / 'none'}"], cwd=REPO, capture_output=True, text=True
  )
  assert (
    empty.returncode == 1 and empty.stderr.strip().startswith("error:") and len(empty.stderr.strip().splitlines()) == 1
  )
  assert json.loads((tmp_path / "config.json").read_text())["num_epochs"] == 2


def test_one_seed_reads_n_1_not_a_zero_spread_and_the_csv_has_one_seed_column(tmp_path):
  results = [trial("features=16", 0, 0.89, 4.0), trial("features=64", 0, 0.91, 18.0)]
  text = report.write_report(tmp_path, {"num_epochs": 1}, results).text
  assert "± 0.00" not in text and "| features=16 | 1 | 89.00 (n=1) | 4.00 |" in text
  assert "**Smoke check, not an answer**" in text and "The rule's pick: features=64, 91.00% (n=1) test accuracy" in text
  header = (tmp_path / "results.csv").read_text().splitlines()[0].split(",")
  assert header.count("seed") == 1 and "model.features" in header


def test_report_files_get_the_usual_permissions(tmp_path):
  mask = os.umask(0o022)
  os.umask(mask)
  report.write_report(tmp_path, {"num_epochs": 2}, RESULTS)
  for name in ("report.md", "results.csv", "pareto.png"):
    assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~mask, name


@pytest.mark.parametrize(
  "sweep", sorted(p.parent.name for p in (REPO / "experiments" / "fashion_mnist_sweet_spot").glob("*/results.jsonl"))
)
def test_the_recorded_sweeps_still_read_to_the_tables_they_recorded(sweep):
  """Sweeps recorded before today's layout (flat config fields, no configuration in result lines) read as then."""
  directory = REPO / "experiments" / "fashion_mnist_sweet_spot" / sweep
  recorded = (directory / "report.md").read_text()
  again = report.read(directory)

  # the tables of figures (the answer's and the one per meaning of fast, newer than the records, apart)
  def measured(text):
    return [t for t in tables(text) if not t[0].startswith(("| |", "| fast ("))]

  assert measured(recorded) == measured(again.text)
  name = again.sweet_spot.name
  assert f"**Sweet spot: {name}**" in recorded or f"The rule's pick on the means: {name}," in recorded


def tables(text: str) -> list[list[str]]:
  """report.md's tables, each a list of its lines."""
  out, current = [], []
  for line in text.splitlines() + [""]:
    if line.startswith("|"):
      current.append(line)
    elif current:
      out.append(current)
      current = []
  return out
