"""How sure the sweep's answer is: the sweet-spot rule run again on draws from what the seeds allow.

The seeds' spread is taken as common to every configuration and estimated from all of them (pooled:
the sample variances weighted by their degrees of freedom, ``sum(n_i - 1)`` in all); with 2-3 seeds
per configuration a spread of one configuration alone is itself too noisy to trust (the recorded
3-seed grids show 0.12-0.42 points for one network and the next). Each configuration's mean accuracy
(on the deciding split) and mean log2 cost (seconds per epoch, or what ``sweep.report.speed`` names)
are then drawn from their posterior under the
usual noninformative prior for normal data with one spread for all: each draw takes a spread
(``pooled_std x sqrt(df / chi2(df))``) and then every mean (``mean + spread / sqrt(n) x normal``), so each
mean alone is Student's t with the pooled degrees of freedom. Where no configuration has two seeds there is no spread to pool: no
confidence can be stated, and the answer says it is a smoke check.

The rule (``convnet.results.analysis.choose``) picks a sweet spot in each of :data:`DRAWS` draws. The
answer is the rule's pick on the means, *decided* when it is picked in at least ``confidence`` of the
draws (``sweep.report.confidence``, default 0.9), else *undecided* between the configurations picked in
at least 5% of them. The same draws give each configuration's share of draws on the Pareto front (with
the speed margin: one network counts as faster than another only by more than ``speed_margin``, a
relative difference that timing noise does not cross) and of being the most accurate. The draws use
a fixed generator (:data:`SEED`): the same records give the same percentages.
"""

from collections.abc import Mapping, Sequence
import dataclasses
import math
import statistics
from typing import Any

import numpy as np

from convnet.results import analysis

DRAWS = 4000
SEED = 0
CONFIDENCE = 0.9  # the share of draws an answer needs to be called decided
CONTENDER = 0.05  # a configuration picked in at least this share of draws is named as a contender
SETTLE_LIMIT = 100  # more seeds per configuration than this to settle: the contenders are practically level


@dataclasses.dataclass(frozen=True)
class Answer:
  """The sweep's answer with how sure it is (see the module)."""

  status: str  # 'decided', 'undecided', 'smoke check' (no spread known), 'none' (nothing to choose from)
  sweet_spot: str | None  # the rule's pick on the means
  share: float | None  # the share of draws that pick it
  shares: dict[str, float]  # every configuration picked in some draw, most often first
  confidence: float
  rule: str
  rule_text: str
  split: str  # the split decisions read: 'validation' (or 'test' in sweeps recorded before it existed)
  most_accurate: str | None
  on_front: dict[str, float]  # each configuration's share of draws in which it is on the Pareto front
  others: dict[str, str | None]  # the pick of each other rule (on the means)
  settle: str  # what more seeds would likely do ('' when decided)
  test_accuracy: tuple[float, float] | None  # the sweet spot's mean and std test accuracy (reported only)
  seeds: dict[str, int]  # seeds per configuration
  per_doubling: float | None = None  # the exchange rate, where that is the rule

  @property
  def contenders(self) -> list[str]:
    return [name for name, share in self.shares.items() if share >= CONTENDER]

  def text(self) -> str:
    """One sentence: the answer and how sure it is."""
    if self.status == "none":
      return "no sweet spot: no configuration completed above chance accuracy"
    if self.status == "smoke check":
      return (
        f"smoke check, not an answer: one seed per configuration, so no spread and no confidence "
        f"(the rule would pick {self.sweet_spot}; run two or more seeds per configuration for an answer)"
      )
    if self.status == "decided":
      return f"sweet spot {self.sweet_spot}, chosen in {100 * self.share:.0f}% of draws over the seeds"
    named = ", ".join(f"{name} ({100 * self.shares[name]:.0f}%)" for name in self.contenders)
    return f"undecided between {named} at {100 * self.confidence:.0f}% confidence; {self.settle}"

  def to_json(self) -> dict[str, Any]:
    return {**dataclasses.asdict(self), "contenders": self.contenders, "text": self.text()}


def settings_of(config: Mapping[str, Any]) -> tuple[str, float, float, float, float]:
  """(rule, tolerance, per_doubling, confidence, speed_margin) of a sweep config (``sweep.report``; the
  speed margin of ``sweep.prune``, the one racing decides with; 0 for sweeps recorded without it)."""
  report = analysis.report_settings(config)
  _, rule, tolerance, per_doubling = analysis.rule_of([], report)
  margin = ((config.get("sweep") or {}).get("prune") or {}).get("speed_margin", 0.0)
  return rule, tolerance, per_doubling, report.get("confidence", CONFIDENCE), margin


def pooled_std(groups: Sequence[Sequence[float]]) -> tuple[float, int]:
  """(pooled standard deviation, its degrees of freedom) of groups of values; (0.0, 0) with no group of two."""
  df = sum(len(g) - 1 for g in groups if len(g) > 1)
  if not df:
    return 0.0, 0
  return math.sqrt(sum((len(g) - 1) * statistics.variance(g) for g in groups if len(g) > 1) / df), df


def draws(rows: Sequence[analysis.ConfigResult], count: int = DRAWS, seed: int = SEED):
  """(accuracy, seconds): ``count`` x configurations draws of each configuration's mean figures (see the
  module); None when no configuration has two seeds (no spread known).

  The joint posterior of the pooled model: in each draw one spread for all configurations,
  ``sigma = pooled_std x sqrt(df / chi2(df))``, then each mean ``mean + sigma / sqrt(n) x normal`` (each
  mean alone is then Student's t with df degrees of freedom)."""
  times = [[math.log2(s) for s in r.costs] for r in rows]
  accuracy_std, df = pooled_std([r.accuracies for r in rows])
  time_std, _ = pooled_std(times)
  if not df:
    return None
  rng = np.random.default_rng(seed)
  n = np.array([len(r.accuracies) for r in rows], float)
  by_name = np.argsort(np.argsort([r.name for r in rows], kind="stable"))  # draws follow names, not row order

  def drawn(means: list[float], std: float) -> np.ndarray:
    sigma = std * np.sqrt(df / rng.chisquare(df, count))
    return np.array(means) + sigma[:, None] / np.sqrt(n) * rng.standard_normal((count, len(rows)))[:, by_name]

  accuracy = drawn([statistics.fmean(r.accuracies) for r in rows], accuracy_std)
  log_seconds = drawn([statistics.fmean(t) for t in times], time_std)
  # With few degrees of freedom a draw's spread can be enormous: kept finite (2**1000 s), never inf.
  return accuracy, np.exp2(np.clip(log_seconds, -1000.0, 1000.0))


def on_front(accuracy: np.ndarray, seconds: np.ndarray, speed_margin: float = 0.0) -> np.ndarray:
  """draws x configurations: whether each is on the Pareto front in each draw. One beats another when it
  is at least as accurate and at least as fast, and better in one of them; *faster* means by more than
  ``speed_margin`` (relative), and within it the two count as equally fast."""
  a_i, a_j = accuracy[:, :, None], accuracy[:, None, :]
  s_i, s_j = seconds[:, :, None], seconds[:, None, :]
  as_fast = s_j <= s_i * (1 + speed_margin)
  faster = s_j * (1 + speed_margin) < s_i
  beaten = (a_j >= a_i) & as_fast & ((a_j > a_i) | faster)
  np.einsum("dii->di", beaten)[...] = False  # never beaten by itself
  return ~beaten.any(axis=2)


def answer(
  rows: Sequence[analysis.ConfigResult],
  rule: str = analysis.DEFAULT_RULE,
  tolerance: float = 0.005,
  per_doubling: float = analysis.PER_DOUBLING,
  confidence: float = CONFIDENCE,
  speed_margin: float = 0.0,
  count: int = DRAWS,
) -> Answer:
  """The sweet spot of ``rows`` by ``rule`` and how sure it is (see the module)."""
  rows = [r for r in rows if not r.at_chance]
  split = rows[0].split if rows else "validation"
  common = {
    "confidence": confidence,
    "rule": rule,
    "rule_text": analysis.rule_text(rule, tolerance, per_doubling, split, rows[0].speed if rows else "train_time"),
    "split": split,
    "seeds": {r.name: len(r.seeds) for r in rows},
    "per_doubling": per_doubling if rule == "exchange_rate" else None,
  }
  empty = {"share": None, "shares": {}, "on_front": {}, "settle": ""}
  if not rows:
    return Answer("none", None, most_accurate=None, others={}, test_accuracy=None, **empty, **common)
  spot = analysis.sweet_spot(rows, rule, tolerance, per_doubling)[0]
  known = {
    "most_accurate": analysis.most_accurate(rows).name,
    "others": {
      other: analysis.sweet_spot(rows, other, tolerance, per_doubling)[0].name
      for other in analysis.RULES
      if other != rule
    },
    "test_accuracy": (spot.test_accuracy_mean, spot.test_accuracy_std) if spot.test_accuracy_mean is not None else None,
  }
  drawn = draws(rows, count)
  if drawn is None:
    return Answer("smoke check", spot.name, **empty, **known, **common)
  accuracy, seconds = drawn
  std = np.array([r.accuracy_std for r in rows])
  picks = np.bincount(analysis.choose(accuracy, seconds, std, rule, tolerance, per_doubling), minlength=len(rows))
  shares = {rows[i].name: float(picks[i] / count) for i in np.argsort(-picks, kind="stable") if picks[i]}
  front = dict(
    zip((r.name for r in rows), on_front(accuracy, seconds, speed_margin).mean(axis=0).tolist(), strict=True)
  )
  share = shares.get(spot.name, 0.0)
  status = "decided" if share >= confidence else "undecided"
  settle = "" if status == "decided" else _settle(rows, shares, spot, rule, per_doubling, confidence)
  return Answer(status, spot.name, share=share, shares=shares, on_front=front, settle=settle, **known, **common)


def _t_quantile(p: float, df: int) -> float:
  """Student's t quantile (the Cornish-Fisher expansion around the normal one; close for df >= 2)."""
  z = statistics.NormalDist().inv_cdf(p)
  return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def seeds_to_settle(rows, shares, spot, rule: str, per_doubling: float, confidence: float):
  """(first, second, gap, seeds): the two contenders picked most often, the gap in the rule's value between
  them and the seeds per configuration at which that gap, if it holds, clears ``confidence``'s one-sided t
  bound on the difference of two means (inf beyond :data:`SETTLE_LIMIT`); None where the rule is not
  ``exchange_rate`` or there is one contender. A pairwise estimate: a lower bound where more remain."""
  by_name = {r.name: r for r in rows}
  if rule != "exchange_rate" or len(shares) < 2:
    return None
  first, second = (by_name[name] for name in list(shares)[:2])

  def value(r):
    return r.accuracy_mean - per_doubling * math.log2(r.cost_mean)

  gap = abs(value(first) - value(second))
  spread = math.sqrt(2) * pooled_std([r.accuracies for r in rows])[0]
  have = min(len(first.seeds), len(second.seeds))
  needed = next(
    (
      n for n in range(have + 1, SETTLE_LIMIT + 1) if _t_quantile(confidence, 2 * (n - 1)) * spread / math.sqrt(n) < gap
    ),
    math.inf,
  )
  return first, second, gap, needed


def _settle(rows, shares, spot, rule: str, per_doubling: float, confidence: float) -> str:
  """What more seeds would likely do (:func:`seeds_to_settle`), in words."""
  found = seeds_to_settle(rows, shares, spot, rule, per_doubling, confidence)
  if found is None:
    return "more seeds per configuration would narrow it"
  first, second, gap, needed = found
  if needed > SETTLE_LIMIT:
    return (
      f"{first.name} and {second.name} are practically level by this rule ({100 * gap:.2f} points of value apart): "
      "more seeds would not tell them apart; either is a fair answer"
    )
  return (
    f"about {needed} seeds per configuration would likely settle {first.name} against {second.name} "
    f"(if their gap of {100 * gap:.2f} points of value holds)"
  )
