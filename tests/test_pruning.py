"""Pareto pruning's rule on hand-made results: dominated with and without the margin, ties, one seed."""

import pytest

from convnet.pruning import ONE_SEED_MARGIN, Standing, dominated


def s(name, mean, std, seconds, seeds=3):
  return Standing(name, mean, std, seeds, seconds)


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
