"""Re-makes a sweep's report from its records (``convnet.results.report.write_report``)::

python -m convnet.report --workdir=runs/sweep
"""

from absl import flags

from convnet import cli
from convnet.results import report
from convnet.rundir import locks
from convnet.sweep import store


def define_flags(values: flags.FlagValues) -> None:
  flags.DEFINE_string("workdir", None, "A sweep directory (holds results.jsonl).", flag_values=values)
  flags.mark_flag_as_required("workdir", flag_values=values)


def main(values: flags.FlagValues) -> None:
  sweep = store.open_existing(values.workdir)
  with locks.hold(sweep.workdir):  # one writer of the report's files: not while the sweep itself runs
    done = report.write_report(sweep.workdir)
  print(done.text)
  print("wrote " + ", ".join(str(f) for f in done.files))


if __name__ == "__main__":
  cli.run(main, define_flags)
