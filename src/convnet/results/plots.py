"""The sweep's pictures: accuracy against speed with the Pareto front, and learning curves.

Figures are matplotlib ``Figure`` objects on the Agg canvas (no pyplot, no global state), so they
are safe in scripts, tests and notebooks alike.
"""

from collections.abc import Mapping, Sequence
import math
import os
from pathlib import Path
import statistics
from typing import Any

from convnet.results import speeds


def figure(width: float = 7.0, height: float = 5.0, dpi: int = 110):
  """A matplotlib Figure on the Agg canvas (savefig works without pyplot)."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  fig = Figure(figsize=(width, height), dpi=dpi)
  FigureCanvasAgg(fig)
  return fig


def short_label(name: str) -> str:
  """'features=64-64,kernel_size=3' -> '64-64 k3' for plot labels."""
  return name.replace("features=", "").replace(",kernel_size=", " k").replace("kernel_size=", "k")


def pareto(
  rows: Sequence[Any],
  front: Sequence[Any],
  spot: Any | None,
  machine: str,
  pruned: Sequence[Any] = (),
  on_front: Mapping[str, float] | None = None,
  per_doubling: float | None = None,
  status: str = "decided",
):
  """Deciding accuracy (validation) against the cost "fast" means (seconds per epoch by default; the rows'
  ``speed``, ``convnet.results.speeds``), log scale, one point per configuration (± std over seeds).

  ``rows``, ``front`` (fastest first) and ``spot`` are ``analysis.ConfigResult``s; ``pruned``
  (``spending.Pruned``) are drawn greyed at the epoch they stopped, labelled with it. ``on_front``: each
  configuration's share of draws on the front (``convnet.results.confidence``), written by its label;
  ``per_doubling``: the exchange rate, drawn as the line through the sweet spot that the rule slides up
  until it last touches a configuration. ``status``: the answer's (``confidence.Answer.status``); a spot
  that is not decided is labelled as the rule's pick on the means, not as the sweet spot.
  """
  fig = figure()
  ax = fig.add_subplot()
  for i, p in enumerate(pruned):
    r = p.row
    ax.errorbar(r.cost_mean, 100 * r.accuracy_mean, xerr=r.cost_std, yerr=100 * r.accuracy_std, fmt="o",
                color="0.75", mfc="none", capsize=2,
                label="pruned (accuracy at the epoch it stopped)" if i == 0 else None)  # fmt: skip
    ax.annotate(f"{short_label(r.name)} (ep {p.epoch})", (r.cost_mean, 100 * r.accuracy_mean),
                textcoords="offset points", xytext=(5, -9), fontsize=6, color="0.55")  # fmt: skip
  for r in rows:
    ax.errorbar(r.cost_mean, 100 * r.accuracy_mean, xerr=r.cost_std, yerr=100 * r.accuracy_std, fmt="o",
                color="tab:red" if r in front else "tab:blue", capsize=3)  # fmt: skip
    share = f" (front {100 * on_front[r.name]:.0f}%)" if on_front and r.name in on_front else ""
    ax.annotate(short_label(r.name) + share, (r.cost_mean, 100 * r.accuracy_mean), textcoords="offset points",
                xytext=(5, 5), fontsize=7)  # fmt: skip
  ax.plot(
    [r.cost_mean for r in front], [100 * r.accuracy_mean for r in front], "--", color="tab:red", label="Pareto front"
  )
  if spot is not None:
    ax.scatter([spot.cost_mean], [100 * spot.accuracy_mean], s=250, facecolors="none", edgecolors="black",
               label=f"sweet spot: {spot.name}" if status == "decided"
               else f"the rule's pick on the means ({status}): {spot.name}")  # fmt: skip
  if spot is not None and per_doubling is not None and rows:
    low, high = min(r.cost_mean for r in rows), max(r.cost_mean for r in rows)
    xs = [low, high]
    ys = [100 * (spot.accuracy_mean + per_doubling * math.log2(x / spot.cost_mean)) for x in xs]
    ax.plot(xs, ys, ":", color="0.3", label=f"exchange rate: {100 * per_doubling:.2f} points per doubling")
  split = rows[0].split if rows else "validation"
  ax.set_xscale("log")
  from matplotlib.ticker import FuncFormatter  # with the figure's other matplotlib imports: slow to import

  plain = FuncFormatter(lambda x, _: f"{x:g}")  # 2, 3, 5, 10, 20 rather than 2x10^0 (which overlap)
  ax.xaxis.set_major_formatter(plain)
  ax.xaxis.set_minor_formatter(plain)
  ax.set_xlabel(speeds.AXIS_LABELS[rows[0].speed if rows else speeds.DEFAULT_SPEED])
  ax.set_ylabel(f"{split} accuracy (%), mean ± std over seeds")
  ax.set_title(f"Accuracy vs speed\n{machine}", fontsize=8)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, loc="best")
  fig.tight_layout()
  return fig


def learning_curves(curves: Mapping[str, Mapping[int, Sequence[float]]], split: str = "validation"):
  """Accuracy on ``split`` per epoch, mean over seeds: ``curves[configuration][epoch]`` = accuracies."""
  fig = figure()
  ax = fig.add_subplot()
  for name, by_epoch in curves.items():
    epochs = sorted(by_epoch)
    ax.plot(epochs, [100 * statistics.fmean(by_epoch[e]) for e in epochs], marker="o", label=short_label(name))
  ax.set_xlabel("epoch")
  ax.set_ylabel(f"{split} accuracy (%), mean over seeds")
  ax.set_title("Learning curves")
  ax.grid(alpha=0.3)
  if curves:
    ax.legend(fontsize=6)
  fig.tight_layout()
  return fig


def save(fig, path: Path) -> None:
  """Writes the figure to ``path`` through a temporary file, so a reader never sees half a PNG."""
  tmp = path.with_name(f".{path.name}.tmp.png")
  fig.savefig(tmp)
  os.replace(tmp, path)
