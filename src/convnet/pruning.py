"""Replays Pareto pruning on a finished sweep's records (``convnet.sweep.replay``)::

python -m convnet.pruning --workdir=runs/sweep --rungs=1,2 --margin=1.0   # what the rule would do there
"""

from pathlib import Path

from absl import flags

from convnet import cli
from convnet.errors import ConfigError
from convnet.sweep import replay
from convnet.sweep.strategies import DEFAULT_MARGIN, ONE_SEED_MARGIN


def define_flags(values: flags.FlagValues) -> None:
  flags.DEFINE_string(
    "workdir",
    None,
    "A finished full-grid sweep directory (of a pruned one, the replay reads its finishers only, and says so).",
    flag_values=values,
  )
  flags.DEFINE_list("rungs", ["1", "2"], "Epochs to prune at, e.g. 1,2.", flag_values=values)
  flags.DEFINE_float(
    "margin", DEFAULT_MARGIN, "sweep.prune.margin: standard deviations over seeds.", flag_values=values
  )
  flags.DEFINE_float("one_seed_margin", ONE_SEED_MARGIN, "sweep.prune.one_seed_margin (accuracy).", flag_values=values)
  flags.DEFINE_bool("keep_leaders", True, "sweep.prune.keep_leaders: never stop one level with the best.",
                    flag_values=values)  # fmt: skip
  flags.mark_flag_as_required("workdir", flag_values=values)


def main(values: flags.FlagValues) -> None:
  try:
    rung_values = [int(v) for v in values.rungs]
  except ValueError:
    raise ConfigError(f"--rungs={','.join(values.rungs)}: give epochs as integers >= 1, e.g. 1,2") from None
  if not rung_values or min(rung_values) < 1 or values.margin < 0 or values.one_seed_margin < 0:
    raise ConfigError("--rungs takes epochs >= 1 and the margins numbers >= 0")
  print(
    replay.replay(Path(values.workdir), rung_values, values.margin, values.one_seed_margin, values.keep_leaders).text()
  )


if __name__ == "__main__":
  cli.run(main, define_flags)
