"""Pareto pruning's rule on hand-made results (dominated with and without the margin, ties, one seed, the
leaders kept, a chain inside the noise), its config values, its replay, and the report of a pruned
sweep; tests/test_sweep.py and tests/test_executors.py run pruned sweeps."""

import pytest

from convnet.errors import ConfigError
from convnet.results import analysis, markdown, report, spending
from convnet.rundir import files
from convnet.sweep import replay, strategies
from convnet.sweep.strategies import ONE_SEED_MARGIN, Standing


def s(name, mean, std, seconds, seeds=3):
  return Standing(name, mean, std, seeds, seconds)


def dominated(standings, **margins):
  """The dominance relation alone (no leader kept): the tests below are about it."""
  return strategies.dominated(standings, keep_leaders=False, **margins)


def test_a_slower_configuration_no_more_accurate_than_a_faster_one_is_stopped():
  fast, slow = s("fast", 0.912, 0.003, 10.0), s("slow", 0.910, 0.003, 16.0)
  verdicts = dominated([fast, slow])
  assert set(verdicts) == {"slow"}
  assert verdicts["slow"].by == "fast"
  assert verdicts["slow"].accuracy_lead == pytest.approx(0.002)
  assert verdicts["slow"].speedup == pytest.approx(1.6)
  assert "fast is 1.60x faster and +0.20 points" in verdicts["slow"].text()


def test_the_margin_is_the_seeds_noise():
  fast = s("fast", 0.905, 0.003, 10.0)
  within = s("within", 0.907, 0.002, 20.0)  # 0.2 points better: inside 1 std (0.3)
  beyond = s("beyond", 0.909, 0.002, 20.0)  # 0.4 points better: outside
  assert set(dominated([fast, within])) == {"within"}
  assert dominated([fast, within])["within"].accuracy_lead == pytest.approx(-0.002)
  assert dominated([fast, beyond]) == {}
  assert set(dominated([fast, beyond], prune_margin=2.0)) == {"beyond"}  # a wider margin stops it
  assert dominated([fast, within], prune_margin=0.0) == {}  # no margin: only at least as accurate


def test_ties_stop_the_slower_one_and_equal_speed_stops_neither():
  assert set(dominated([s("a", 0.9, 0.0, 5.0), s("b", 0.9, 0.0, 6.0)], prune_margin=0.0)) == {"b"}
  assert dominated([s("a", 0.9, 0.001, 5.0), s("b", 0.9, 0.001, 5.0)]) == {}


def test_one_seed_uses_the_fixed_margin():
  fast = s("fast", 0.900, 0.0, 10.0, seeds=1)
  close = s("close", 0.900 + ONE_SEED_MARGIN - 1e-6, 0.0, 12.0, seeds=1)
  far = s("far", 0.900 + ONE_SEED_MARGIN + 1e-3, 0.0, 12.0, seeds=1)
  assert set(dominated([fast, close, far])) == {"close"}
  assert set(dominated([fast, far], one_seed=0.01)) == {"far"}


def test_the_verdict_names_the_dominator_with_the_largest_lead_and_the_front_survives():
  front = [s("16", 0.894, 0.001, 4.0), s("32", 0.906, 0.002, 6.5), s("64", 0.912, 0.003, 17.3)]
  behind = s("128k5", 0.913, 0.004, 92.9)  # inside 64's noise, 5.4x slower
  verdicts = dominated([*front, behind])
  assert set(verdicts) == {"128k5"} and verdicts["128k5"].by == "64"
  with pytest.raises(ValueError, match="must be >= 0"):
    dominated(front, prune_margin=-1)


def test_leaders_are_kept_however_dominated():
  # The recorded default grid after epoch 1 (Xeon, 3 seeds): the four biggest are level within noise,
  # and 128-128 3x3, the full grid's sweet spot, trails the faster 64-64 5x5 by 0.08 points.
  epoch_1 = [
    s("16k3", 0.8613, 0.0009, 2.43), s("16k5", 0.8613, 0.0042, 3.08), s("32k3", 0.8734, 0.0024, 4.43),
    s("32k5", 0.8763, 0.0043, 6.75), s("64k3", 0.8820, 0.0041, 10.61), s("64k5", 0.8849, 0.0023, 15.80),
    s("128k3", 0.8841, 0.0023, 29.56), s("128k5", 0.8837, 0.0046, 48.59),
  ]  # fmt: skip
  assert set(dominated(epoch_1)) == {"16k5", "32k5", "64k5", "128k3", "128k5"}
  kept = strategies.dominated(epoch_1)  # within one std of the most accurate (64k5): may still become it
  assert set(kept) == {"16k5", "32k5"} and kept["32k5"].by == "32k3"
  one_seed = [s("fast", 0.900, 0.0, 1.0, seeds=1), s("slow", 0.903, 0.0, 2.0, seeds=1)]
  assert strategies.dominated(one_seed) == {} and set(dominated(one_seed)) == {"slow"}


def test_only_a_configuration_that_trains_on_stops_another():
  # The recorded :wide sweep after epoch 2 (Xeon, 3 seeds): each of 16-32, 16-64 and 32-64 3x3 is inside
  # the noise of the next faster one, but 16-64 is 1.19 points ahead of 16-16, the only faster one left.
  epoch_2 = [
    s("16-16", 0.8734, 0.0065, 2.32), s("16-32", 0.8773, 0.0098, 2.65), s("16-64", 0.8853, 0.0072, 3.87),
    s("32-64", 0.8912, 0.0049, 5.68), s("64-128k5", 0.8962, 0.0018, 23.69),
  ]  # fmt: skip
  verdicts = strategies.dominated(epoch_2)
  assert set(verdicts) == {"16-32", "32-64"}  # 16-64 goes on: the 16-32 that was level with it stops
  assert verdicts["16-32"].by == "16-16" and verdicts["32-64"].by == "16-64"
  assert dominated(epoch_2[1:3])["16-64"].by == "16-32"  # were 16-32 to go on, it would stop 16-64
  kept = {x.name for x in epoch_2} - set(verdicts)
  assert all(v.by in kept for v in verdicts.values())  # every verdict's dominator trains on


def test_pruning_config_values_are_checked():
  base = {"method": "pareto", "rungs": (2, 1, 7), "margin": 1.0}

  def rungs(prune):
    return getattr(strategies.from_settings(prune, num_epochs=5), "rungs", ())

  assert rungs(base) == (1, 2)  # sorted; a rung at or past num_epochs is the last epoch anyway
  assert rungs({**base, "method": None}) == () and rungs({**base, "method": "None"}) == ()
  assert isinstance(strategies.from_settings({**base, "method": None}, 5), strategies.Grid)
  with pytest.raises(ConfigError, match=r"method='halving' is not allowed; use None \(the full grid\) or one of"):
    rungs({**base, "method": "halving"})
  for bad in ((), (0,), (1.5,), "1"):
    with pytest.raises(ConfigError, match=r"sweep.prune.rungs=.*give a tuple of epochs >= 1"):
      rungs({**base, "rungs": bad})
  with pytest.raises(ConfigError, match=r"sweep.prune.margin=-1: give a number >= 0"):
    rungs({**base, "margin": -1})


def record(name, status, accuracy, seconds, epoch=5, **fields):
  return {"name": name, "configuration": name.rsplit(",seed=", 1)[0], "status": status, "seed": int(name[-1]), "test_accuracy": accuracy, "epoch_seconds": seconds,
          "examples_per_second": 1.0, "num_params": 1, "flops_per_example": 1, "epoch": epoch, **fields}  # fmt: skip


def test_the_report_chooses_among_finished_configurations_and_says_what_pruning_stopped():
  verdict = {"pruned_at": 1, "pruned_by": "c=fast", "accuracy_lead": -0.001, "prune_margin": 0.004, "speedup": 3.0}
  results = [
    record("c=fast,seed=0", "completed", 0.90, 1.0),
    record("c=fast,seed=1", "completed", 0.91, 1.1),
    record("c=mid,seed=0", "completed", 0.92, 2.0),
    record("c=mid,seed=1", "completed", 0.92, 2.0),
    # More accurate at epoch 1 than anything finished, but stopped there: never the sweet spot.
    record("c=slow,seed=0", "pruned", 0.95, 3.0, epoch=1, **verdict),
    record("c=slow,seed=1", "pruned", 0.95, 3.0, epoch=1, **verdict),
  ]
  config = {"num_epochs": 5, "sweep": {"prune": {"method": "pareto", "rungs": (1, 2), "margin": 1.0}}}
  rows = analysis.aggregate(results)
  assert [r.name for r in rows] == ["c=fast", "c=mid"]
  assert analysis.chosen_sweet_spot(rows, config)[0].name == "c=mid"
  assert spending.trial_epochs(results, 5) == (22, 30)
  [stopped] = spending.pruned(results)
  assert (stopped.row.name, stopped.epoch, stopped.by, len(stopped.row.seeds)) == ("c=slow", 1, "c=fast", 2)
  text = markdown.markdown(config, results)
  assert "| c=mid ★ |" in text  # the rule's pick (two seeds each: how sure is said beside it)
  assert "Trial-epochs trained: 22 of the full grid's 30 (73%; saved 8)." in text
  assert "| c=slow | 1 | 2 | 95.00 ± 0.00 | 3.00 | c=fast | -0.10 | 0.40 | 3.00x |" in text
  assert "## Trials not completed" not in text  # pruned trials are listed under Pruning only
  fig = report.Report(text, results, rows, rows[1], []).pareto_figure()
  labels = [t.get_text() for t in fig.axes[0].texts]
  assert "c=slow (ep 1)" in labels and "c=fast" in labels


def test_replay_on_a_full_grid_says_what_pruning_would_stop_and_whether_the_answer_moves(tmp_path):
  # A fast and a slow configuration, two seeds, three epochs: level after epoch 1, the slow one far
  # ahead at the end. Pruning at epoch 1 without keeping leaders stops the slow one and so changes the
  # answer: the replay says so.
  accuracy = {"c=fast": (0.80, 0.83, 0.85), "c=slow": (0.80, 0.86, 0.90)}
  seconds = {"c=fast": 1.0, "c=slow": 3.0}
  files.write_json(tmp_path / "config.json", {"num_epochs": 3, "sweep": {"report": {"rule": "within_std"}}})
  for config, curve in accuracy.items():
    for seed in (0, 1):
      name = f"{config},seed={seed}"
      for epoch, value in enumerate(curve, 1):
        files.append_jsonl(tmp_path / "trials" / name / "metrics.jsonl",
                          {"epoch": epoch, "test_accuracy": value + 0.01 * seed, "epoch_seconds": seconds[config],
                           "examples_per_second": 1.0})  # fmt: skip
      files.append_jsonl(
        tmp_path / "results.jsonl", record(name, "completed", curve[-1] + 0.01 * seed, seconds[config], 3)
      )
  assert replay.replay(tmp_path, [1]).stopped == {}  # level with the most accurate: a leader, kept
  done = replay.replay(tmp_path, [1], keep_leaders=False)
  assert set(done.stopped) == {"c=slow,seed=0", "c=slow,seed=1"} and done.stopped["c=slow,seed=0"][0] == 1
  assert (done.full_spot, done.pruned_spot) == ("c=slow", "c=fast")
  assert done.epochs == (8, 12) and done.train_seconds == (12.0, 24.0)
  text = done.text()
  assert "epoch 1: c=slow: c=fast is 3.00x faster and +0.00 points as accurate" in text
  assert "(a DIFFERENT answer)" in text and "trial-epochs: 8 of 12 (67%)" in text
  later = replay.replay(
    tmp_path, [2], keep_leaders=False
  )  # by epoch 2 the slow one leads by 3 points, beyond the noise
  assert later.stopped == {} and "(the same answer)" in later.text() and later.epochs == (12, 12)
  assert "not a full grid" not in later.text()
  files.append_jsonl(tmp_path / "results.jsonl", record("c=mid,seed=0", "pruned", 0.83, 2.0, 1, pruned_at=1))
  partial = replay.replay(tmp_path, [2], keep_leaders=False)  # a pruned sweep: its finishers only
  assert partial.left_out == ("c=mid",) and partial.epochs == (12, 12)
  assert "note: not a full grid: 1 configuration(s) did not finish there" in partial.text()
