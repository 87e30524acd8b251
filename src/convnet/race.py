"""Replays racing on a finished reference grid over random seed orders (``convnet.sweep.evaluation``)::

python -m convnet.race --workdir=experiments/fashion_mnist_sweet_spot/reference_grid --config=configs/sweep.py --orders=50

The racing settings (``sweep.prune``: rungs, initial_seeds, stop_below, speed_margin, budget) and the
answer's rule (``sweep.report``) come from ``--config`` and its ``--config.*`` overrides; the
reference's own answer is computed by the same rule from all of its seeds. It prints the reference
answer, how often racing names it, says another or says undecided, what it spends against the full
grid with ``--baseline_seeds`` seeds, and the hypervolume of its fronts.
"""

from pathlib import Path

from absl import flags

from convnet import cli
from convnet.errors import ConfigError
from convnet.results import confidence
from convnet.sweep import evaluation, racing, replay, settings, strategies


def define_flags(values: flags.FlagValues) -> None:
  cli.define_config(values)
  flags.DEFINE_string(
    "workdir", None, "A finished full-grid sweep with many seeds (the reference).", flag_values=values
  )
  flags.DEFINE_integer("orders", 50, "Random seed orders to replay.", flag_values=values)
  flags.DEFINE_integer("seed", 0, "The generator of the seed orders.", flag_values=values)
  flags.DEFINE_integer("baseline_seeds", 3, "Seeds per configuration of the full grid to compare with.",
                       flag_values=values)  # fmt: skip
  flags.mark_flag_as_required("workdir", flag_values=values)


def main(values: flags.FlagValues) -> None:
  config = values.config.to_dict()
  if values.orders < 1 or values.baseline_seeds < 1:
    raise ConfigError(f"--orders={values.orders} and --baseline_seeds={values.baseline_seeds}: give integers >= 1")
  sweep = settings.of(config)
  prune = {**(sweep.get("prune") or {}), "method": "race"}
  reference = replay.grid(Path(values.workdir))
  strategy = strategies.from_settings(prune, reference.num_epochs, sweep.get("report") or {})
  assert isinstance(strategy, racing.Racing)
  rule = confidence.settings_of(config)
  pool = len((sweep.get("axes") or {}).get("seeds") or (0,))
  print(f"{strategy.describe()}; a pool of {pool} seeds per configuration (sweep.axes.seeds)")
  print(evaluation.evaluate(reference, strategy, values.orders, values.baseline_seeds, values.seed, rule, pool).text())


if __name__ == "__main__":
  cli.run(main, define_flags)
