"""Racing and the answer's confidence: pure rules on synthetic boards, and one real sweep on permuted test labels."""

import shutil
import subprocess
import sys

from conftest import REPO, sweep_config
import numpy as np
import pytest

from convnet import idx
from convnet.errors import ConfigError
from convnet.results import analysis, confidence, volume
from convnet.rundir import files
from convnet.sweep import driver, evaluation, racing, records, replay, standings, store, strategies, trials
from convnet.sweep.seam import Step

# A grid of four configurations x 8 seeds x 3 epochs: name -> (final accuracy, s/epoch).
TRUTH = {"c=tiny": (0.850, 1.0), "c=small": (0.900, 2.0), "c=big": (0.903, 8.0), "c=huge": (0.880, 16.0)}


def synthetic(noise: float = 0.002, seeds: int = 8, epochs: int = 3, test_shift: float = 0.0, truth=None):
  """A replay board over made-up histories: accuracy rises to ``truth`` (TRUTH) by the last epoch, seed noise ``noise``."""
  rng = np.random.default_rng(1)
  histories, configurations = {}, {}
  for name, (accuracy, seconds) in (truth or TRUTH).items():
    for seed in range(seeds):
      trial = f"{name},seed={seed}"
      offset = rng.normal(0, noise)
      histories[trial] = [
        {"epoch": e, "validation_accuracy": accuracy - 0.02 * (epochs - e) + offset,
         "test_accuracy": rng.uniform() + test_shift, "epoch_seconds": seconds * (1 + rng.normal(0, 0.01))}
        for e in range(1, epochs + 1)
      ]  # fmt: skip
      configurations.setdefault(name, []).append(trial)
  return replay.Replayed(histories, configurations, epochs)


def steps_of(board, strategy):
  out = []
  while (step := strategy.next(board)) is not None:
    assert strategy.next(board) == step  # no hidden state: asked again, it says the same
    out.append(step)
    board.apply(step)
  return out


def test_racing_stops_the_hopeless_adds_seeds_where_they_decide_and_ends_sure():
  board = synthetic()
  race = racing.Racing(rungs=(1,), initial_seeds=2)
  steps = steps_of(board, race)
  assert steps[0] == Step(train={f"{n},seed={s}": 1 for n in TRUTH for s in (0, 1)})
  stopped = {t.split(",")[0] for t in board.stopped}
  assert "c=huge" in stopped and "c=small" not in stopped  # slow and behind: neither the answer nor on the front
  (epoch, verdict) = board.stopped["c=huge,seed=0"]
  assert epoch == 1 and "sweet spot in 0.0% of draws" in verdict.text() and "leading: c=small" in verdict.text()
  rows = analysis.aggregate(board.completed_records({t: {"name": t, "configuration": t.split(",")[0], "status": "completed",
                                                         "seed": int(t[-1]), "epoch": 3, **h[-1], "num_params": 1,
                                                         "flops_per_example": 1, "examples_per_second": 1.0}
                                                     for t, h in board.histories.items()}))  # fmt: skip
  found = confidence.answer(rows)
  assert found.status == "decided" and found.sweet_spot == "c=small" and found.share >= 0.9
  assert board.trial_epochs() < 8 * 3 * len(TRUTH)  # far from the full grid


def test_a_slower_twin_on_the_front_by_a_sliver_stops_and_a_sure_front_member_keeps_one_seed():
  # "twin" is as accurate as "small" (+0.03 points) at twice the time: on the front in about half the draws, but
  # never worth 1% of its hypervolume; "tiny" is surely on the front (the fastest) and surely not the sweet spot.
  truth = {"c=tiny": (0.850, 1.0), "c=small": (0.900, 2.0), "c=twin": (0.9003, 4.0)}
  board = synthetic(noise=0.001, truth=truth)
  steps_of(board, racing.Racing(rungs=(1,), front_seeds=1))
  (epoch, verdict) = board.stopped["c=twin,seed=0"]
  assert epoch == 1 and "without it the front keeps 99% of its hypervolume" in verdict.text()
  assert [board.status(f"c=tiny,seed={s}") for s in (0, 1)] == ["completed", "pruned"]
  assert "its first 1 seed(s) place it" in board.stopped["c=tiny,seed=1"][1].text()
  assert board.status("c=small,seed=0") == board.status("c=small,seed=1") == "completed"
  # Asked to keep every area (front_loss=0) and every seed on the front (the default), both train on as before.
  kept = synthetic(noise=0.001, truth=truth)
  steps_of(kept, racing.Racing(rungs=(1,), front_loss=0.0))
  assert all(kept.status(f"{n},seed={s}") == "completed" for n in truth for s in (0, 1))


def test_racing_tunes_the_axes_that_are_not_costs_per_architecture():
  # Two learning rates (lr) per network: one clearly worse (tuned away at the rung), one level with the best.
  truth = {"c=tiny,lr=1": (0.850, 1.0), "c=tiny,lr=2": (0.800, 1.0), "c=small,lr=1": (0.900, 2.0),
           "c=small,lr=2": (0.899, 2.0), "c=huge,lr=1": (0.880, 16.0), "c=huge,lr=2": (0.879, 16.0)}  # fmt: skip
  board = synthetic(truth=truth)
  board.architectures = {name: name.split(",")[0] for name in truth}
  steps_of(board, racing.Racing(rungs=(1,)))
  assert board.stopped["c=tiny,lr=2,seed=0"][0] == 1 and "tuned away" in board.stopped["c=tiny,lr=2,seed=0"][1].text()
  assert {board.status(f"c=small,lr={lr},seed=0") for lr in (1, 2)} == {"completed"}  # level: both train on
  assert {board.stopped[f"c=huge,lr={lr},seed=0"][0] for lr in (1, 2)} == {1}  # the architecture stops, every setting
  assert board.status("c=tiny,lr=1,seed=1") == "completed"  # the fastest network stays on the front
  untuned = synthetic(truth=truth)
  steps_of(untuned, racing.Racing(rungs=(1,)))
  assert not any("tuned away" in verdict.text() for _, verdict in untuned.stopped.values())


def test_a_sweep_board_knows_each_configuration_architecture(tmp_path):
  config = sweep_config(tmp_path, **{"sweep.axes.learning_rate": (0.001, 0.003), "sweep.axes.seeds": (0, 1),
                                     "sweep.axes.features": ((4, 4), (8, 8)), "sweep.tuned": ("learning_rate",)})  # fmt: skip
  expanded = trials.expand(config)
  names = {t.name for t in expanded}
  board = records.Board(store.SweepStore(tmp_path / "s"), expanded, {}, set(), names, 1, 10, ("learning_rate",))
  assert len(board.configurations) == 4 and len(set(board.architectures.values())) == 2
  for name in board.configurations:
    assert board.architectures[name] == name.replace(",learning_rate=0.001", "").replace(",learning_rate=0.003", "")
  assert records.Board(store.SweepStore(tmp_path / "s"), expanded, {}, set(), names, 1, 10).architectures == {}


def test_racing_stays_within_its_budget_and_says_undecided_when_the_seeds_cannot_tell():
  board = synthetic(noise=0.02)  # seeds ten times noisier than the gaps
  race = racing.Racing(rungs=(), initial_seeds=2, budget=30)
  steps_of(board, race)
  assert board.trial_epochs() <= 30


def test_a_resumed_race_decides_as_the_first_one_did():
  whole = synthetic()
  expected = steps_of(whole, racing.Racing(rungs=(1, 2)))
  interrupted = synthetic()
  first = racing.Racing(rungs=(1, 2))
  for step in expected[:3]:
    interrupted.apply(step)
  assert steps_of(interrupted, racing.Racing(rungs=(1, 2))) == expected[3:]  # a new process, the same decisions
  assert first.next(whole) is None


def test_no_decision_reads_test_accuracy():
  plain, shifted = synthetic(), synthetic(test_shift=0.5)
  assert steps_of(plain, racing.Racing(rungs=(1,))) == steps_of(shifted, racing.Racing(rungs=(1,)))
  pruning = strategies.ParetoPruning((1, 2))
  assert steps_of(synthetic(), pruning) == steps_of(synthetic(test_shift=0.5), pruning)


def row(name, accuracies, seconds):
  return standings.row(name, list(zip(accuracies, seconds, strict=True)))


def test_the_exchange_rate_names_the_knee_not_the_most_accurate():
  rows = [row("16", [0.8933] * 2, [2.42] * 2), row("32", [0.9081] * 2, [4.54] * 2),
          row("64", [0.9116] * 2, [10.48] * 2), row("128", [0.9159] * 2, [29.76] * 2)]  # fmt: skip
  assert analysis.sweet_spot(rows)[0].name == "32"  # +0.35 points for 2.3x the time does not pay 0.5 per doubling
  assert analysis.sweet_spot(rows, "exchange_rate", per_doubling=0.001)[0].name == "128"
  assert analysis.most_accurate(rows).name == "128"
  assert "0.50 points per doubling" in analysis.sweet_spot(rows)[1]


def test_the_answer_says_how_sure_it_is():
  clear = [row("a", [0.90, 0.901, 0.899], [1, 1, 1]), row("b", [0.85, 0.851, 0.849], [1, 1, 1])]
  found = confidence.answer(clear)
  assert (found.status, found.sweet_spot, found.share) == ("decided", "a", 1.0)
  assert found.text() == "sweet spot a, chosen in 100% of draws over the seeds"
  level = [row("a", [0.90, 0.91, 0.89], [1, 1, 1]), row("b", [0.90, 0.89, 0.91], [1, 1, 1])]
  tied = confidence.answer(level)
  assert tied.status == "undecided" and set(tied.contenders) == {"a", "b"} and "practically level" in tied.settle
  apart = [row("a", [0.90, 0.906, 0.894], [1, 1, 1]), row("b", [0.895, 0.901, 0.889], [1, 1, 1])]
  assert "seeds per configuration would likely settle" in confidence.answer(apart).text()
  assert confidence.answer(apart).shares == confidence.answer(apart[::-1]).shares  # whatever the rows' order
  smoke = confidence.answer([row("a", [0.9], [1]), row("b", [0.8], [1])])
  assert smoke.status == "smoke check" and smoke.text().startswith("smoke check, not an answer")


@pytest.mark.parametrize(
  "field, value, message",
  [
    ("initial_seeds", 1, "sweep.prune.initial_seeds=1: give an int >= 2"),
    ("stop_below", 1.5, "sweep.prune.stop_below=1.5: give a number in [0, 1)"),
    ("budget", 0, "sweep.prune.budget=0: give a number of trial-epochs >= 1"),
    ("front_loss", -0.1, "sweep.prune.front_loss=-0.1: give a share of the front's hypervolume in [0, 1)"),
    ("front_seeds", 0, "sweep.prune.front_seeds=0: give an int >= 1"),
  ],
)
def test_racing_values_are_checked(field, value, message):
  with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
    strategies.from_settings({"method": "race", field: value}, 5)


def test_hypervolume_and_its_reference_point():
  assert volume.hypervolume([(0.0, 0.9), (1.0, 0.95)], (2.0, 0.8)) == pytest.approx(2 * 0.1 + 1 * 0.05)
  assert volume.hypervolume([(3.0, 0.99)], (2.0, 0.8)) == 0.0  # beyond the reference point: nothing
  assert volume.hypervolume([(1.0, 0.95), (0.0, 0.9), (1.5, 0.94)], (2.0, 0.8)) == pytest.approx(
    0.25
  )  # dominated: no area
  # The worst of each objective moved out by a tenth of its range: both ends of the front add an area.
  assert volume.reference_point([0.0, 2.0], [0.90, 0.95]) == pytest.approx((2.2, 0.895))
  rng = np.random.default_rng(0)
  costs, accuracies = rng.uniform(0, 3, (50, 4)), rng.uniform(0.8, 0.95, (50, 4))
  drawn = volume.volumes(costs, accuracies, (3.5, 0.75))
  assert drawn == pytest.approx([volume.hypervolume(list(zip(c, a, strict=True)), (3.5, 0.75))
                                 for c, a in zip(costs, accuracies, strict=True)])  # fmt: skip
  kept = volume.kept_share(costs, accuracies, (3.5, 0.75), [1, 2])
  alone = [
    volume.hypervolume([(c[i], a[i]) for i in (0, 3)], (3.5, 0.75)) for c, a in zip(costs, accuracies, strict=True)
  ]
  assert kept == pytest.approx(np.array(alone) / drawn) and (kept <= 1 + 1e-12).all()


def test_hypervolume_and_the_replayed_evaluation():
  board = synthetic()
  records = {t: {"name": t, "configuration": t.split(",")[0], "status": "completed", "seed": int(t[-1]), "epoch": 3,
                 **h[-1], "num_params": 1, "flops_per_example": 1, "examples_per_second": 1.0}
             for t, h in board.histories.items()}  # fmt: skip
  reference = replay.Grid({}, records, dict(board.histories), board.configurations, 3, ())
  result = evaluation.evaluate(
    reference, racing.Racing(rungs=(1,)), orders=5, rule=("exchange_rate", 0.005, 0.005, 0.9)
  )
  assert result.reference.sweet_spot == "c=small" and result.named + result.wrong + result.undecided == 5
  assert result.named == 5 and max(result.trial_epochs) < result.baseline_epochs * 8 / 3
  assert "replayed over 5 seed orders: the reference answer in 5 (100%)" in result.text()
  assert all(0 < v <= 1 for v in result.hypervolume + result.baseline_hypervolume) and result.pool == 8
  pooled = evaluation.evaluate(reference, racing.Racing(rungs=(1,)), orders=5, rule=("exchange_rate", 0.005, 0.005, 0.9),
                               pool=2)  # fmt: skip
  assert pooled.pool == 2 and max(pooled.trial_epochs) <= 2 * 3 * len(TRUTH)  # never a third seed


@pytest.mark.slow
def test_a_sweep_on_permuted_test_labels_decides_exactly_the_same(idx_dir, tmp_path):
  """Racing with a rung and added seeds, on the data and on a copy whose test labels are shuffled."""
  shuffled = tmp_path / "shuffled"
  shutil.copytree(idx_dir, shuffled)
  labels = idx.read_idx(shuffled / "t10k-labels-idx1-ubyte.gz")
  idx.write_idx(shuffled / "t10k-labels-idx1-ubyte.gz", np.random.default_rng(0).permutation(labels))
  outcomes = []
  for data in (idx_dir, shuffled):
    # Accuracy only (no exchange of it for time; speeds within 99% count as equal): nothing the sweet spot
    # hangs on is left to the runs' timing noise, so both must decide alike, draw for draw.
    config = sweep_config(data, **{"num_epochs": 2, "sweep.axes.features": ((4, 4), (8, 8)), "sweep.axes.seeds": (0, 1, 2),
                                   "sweep.prune.method": "race", "sweep.prune.rungs": (1,), "sweep.report.confidence": 0.99,
                                   "sweep.report.per_doubling": 0.0, "sweep.prune.speed_margin": 0.99})  # fmt: skip
    done = driver.run(config, tmp_path / data.name / "sweep")
    lines = files.read_jsonl(tmp_path / data.name / "sweep" / "results.jsonl")
    decisions = [(r["name"], r["status"], r.get("epoch"), r.get("validation_accuracy"), r.get("error")) for r in lines]
    outcomes.append((decisions, done.answer.to_json(), [r.get("test_accuracy") for r in lines]))
  (decided, answer, tested), (decided_again, answer_again, tested_again) = outcomes
  assert decided == decided_again and len(decided) >= 4
  for key in ("status", "sweet_spot", "most_accurate", "share", "shares", "contenders"):
    assert answer[key] == answer_again[key], key
  assert tested != tested_again  # the test labels did change what the test split measures


@pytest.mark.slow
def test_a_race_with_a_tuned_learning_rate_answers_with_one_setting_per_network(idx_dir, tmp_path):
  config = sweep_config(idx_dir, **{"num_epochs": 2, "sweep.axes.features": ((4, 4), (8, 8)),
                                    "sweep.axes.learning_rate": (0.001, 0.01), "sweep.axes.seeds": (0, 1),
                                    "sweep.tuned": ("learning_rate",), "sweep.prune.method": "race",
                                    "sweep.prune.rungs": (1,)})  # fmt: skip
  done = driver.run(config, tmp_path / "sweep")
  lines = files.read_jsonl(tmp_path / "sweep" / "results.jsonl")
  assert {r["status"] for r in lines} <= {"completed", "pruned"} and len({r["configuration"] for r in lines}) == 4
  networks = [
    name.replace(",learning_rate=0.001", "").replace(",learning_rate=0.01", "") for name in done.answer.shares
  ]
  assert done.answer.shares and len(networks) == len(set(networks))  # never two settings of one network
  report_text = (tmp_path / "sweep" / "report.md").read_text()
  assert "tuned away" in report_text and "## Racing" in report_text


def test_the_race_command_replays_a_recorded_grid(tmp_path):
  recorded = REPO / "experiments" / "fashion_mnist_sweet_spot" / "xeon_grid"  # 8 configurations x 3 seeds
  result = subprocess.run(
    [sys.executable, "-m", "convnet.race", f"--workdir={recorded}", "--config=configs/sweep.py", "--orders=4",
     "--config.sweep.prune.rungs=(1,)"],
    cwd=REPO, capture_output=True, text=True, timeout=300,
  )  # fmt: skip
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  assert lines[0].startswith("racing: 2 seeds to start, rungs at epochs 1")
  assert lines[1].startswith("reference answer: ") and lines[2].startswith("replayed over 4 seed orders: ")
  assert "% of the full grid's 120)" in lines[3] and lines[4].startswith("front hypervolume / reference: mean ")
  assert "a pool of 3 seeds per configuration" in lines[0] and "(the full grid's: mean " in lines[4]
  bad = subprocess.run([sys.executable, "-m", "convnet.race", f"--workdir={tmp_path}", "--config=configs/sweep.py"],
                       cwd=REPO, capture_output=True, text=True, timeout=300)  # fmt: skip
  assert bad.returncode == 1 and bad.stderr.strip().startswith("error:") and len(bad.stderr.strip().splitlines()) == 1
