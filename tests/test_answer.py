"""The report's answer: tuned axes chosen per architecture, one answer per directory, the answer file."""

import json

from conftest import REPO

from convnet import configuration
from convnet.results import analysis, report, tuning
from convnet.rundir import files


def result(features, learning_rate, seed, accuracy, seconds):
  name = f"features={features}-{features},learning_rate={learning_rate},seed={seed}"
  return {
    "name": name, "configuration": name.rsplit(",seed=", 1)[0], "status": "completed", "seed": seed, "epoch": 2,
    "overrides": {"model.features": [features, features], "learning_rate": learning_rate, "seed": seed},
    "validation_accuracy": accuracy, "test_accuracy": accuracy - 0.01, "epoch_seconds": seconds,
    "examples_per_second": 1.0, "num_params": features, "flops_per_example": features, "flatten_size": 1,
  }  # fmt: skip


# Two networks x two learning rates: timings of one network differ by noise only.
RESULTS = [
  result(8, 0.001, s, a, t) for s, a, t in ((0, 0.850, 1.00), (1, 0.852, 1.01))
] + [result(8, 0.003, s, a, t) for s, a, t in ((0, 0.870, 1.02), (1, 0.872, 0.99))] + [
  result(16, 0.001, s, a, t) for s, a, t in ((0, 0.880, 2.0), (1, 0.882, 2.02))
] + [result(16, 0.003, s, a, t) for s, a, t in ((0, 0.860, 2.01), (1, 0.862, 1.98))]  # fmt: skip


def sweep(tuned=("learning_rate",), seeds=(0, 1), learning_rates=(0.001, 0.003)):
  config = configuration.load_config(REPO / "configs" / "sweep.py")
  config.sweep.axes.features = ((8, 8), (16, 16))
  config.sweep.axes.kernel_size = (3,)
  config.sweep.axes.learning_rate = learning_rates
  config.sweep.axes.seeds = seeds
  config.sweep.tuned = tuned
  config.num_epochs = 2
  return config.to_dict()


def test_a_tuned_axis_is_chosen_per_architecture_before_the_front(tmp_path):
  config = sweep()
  config["sweep"]["axes"].pop("kernel_size")
  rows, away = tuning.tune(report.analysis.aggregate(RESULTS), config["sweep"]["tuned"])
  assert sorted(r.name for r in rows) == ["features=16-16,learning_rate=0.001", "features=8-8,learning_rate=0.003"]
  assert away == {"features=8-8,learning_rate=0.001": "features=8-8,learning_rate=0.003",
                  "features=16-16,learning_rate=0.003": "features=16-16,learning_rate=0.001"}  # fmt: skip
  text = report.write_report(tmp_path, config, RESULTS).text
  assert "tuned away: features=8-8,learning_rate=0.003" in text
  assert "Swept: features (8-8, 16-16); learning_rate (0.001, 0.003); seeds (0, 1)." in text
  assert "Tuned per architecture on validation accuracy" in text and ", adam swept;" in text
  untuned = report.write_report(tmp_path, {**config, "sweep": {**config["sweep"], "tuned": ()}}, RESULTS).text
  assert "tuned away" not in untuned


def test_main_and_report_give_one_answer_and_list_the_trials_outside_the_grid(tmp_path):
  config = sweep(tuned=(), learning_rates=(0.003,))  # an earlier, larger grid also ran learning_rate 0.001
  config["sweep"]["axes"].pop("kernel_size")
  for r in RESULTS:
    files.append_jsonl(tmp_path / "results.jsonl", r)
  files.write_json(tmp_path / "config.json", config)
  written = report.write_report(tmp_path, config)  # as the driver makes it
  again = report.read(tmp_path)  # as python -m convnet.report reads it
  assert written.answer == again.answer and written.text == again.text
  assert {r["name"] for r in written.results} == {r["name"] for r in RESULTS if "0.003" in r["name"]}
  assert "**4 recorded trial(s) outside this config's grid are left out of everything above**" in written.text
  answer = json.loads((tmp_path / "answer.json").read_text())
  assert answer["sweet_spot"] == written.answer.sweet_spot and answer["status"] in ("decided", "undecided")
  assert answer["split"] == "validation" and answer["text"] == written.answer.text()


def test_the_plot_calls_an_undecided_pick_what_it_is_not_the_sweet_spot():
  from convnet.results import plots

  rows = [analysis.ConfigResult(f"features={n}-{n}", (), (0, 1), a, 0.01, s, 0.1, 1.0, 10, 100, 50)
          for n, s, a in ((8, 1.0, 0.85), (16, 2.0, 0.9))]  # fmt: skip
  labels = {}
  for status in ("decided", "undecided"):
    fig = plots.pareto(rows, rows, rows[1], "a machine", per_doubling=0.005, status=status)
    labels[status] = fig.axes[0].get_legend_handles_labels()[1]
  assert "sweet spot: features=16-16" in labels["decided"]
  assert "the rule's pick on the means (undecided): features=16-16" in labels["undecided"]
  assert not any(label.startswith("sweet spot") for label in labels["undecided"])
