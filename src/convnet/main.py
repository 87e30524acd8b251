"""Command line: train one config, or run a sweep when the config has a ``sweep`` group.

    python -m convnet.main --config=configs/default.py --workdir=runs/default
    python -m convnet.main --config=configs/default.py --workdir=runs/quick --config.num_epochs=1
    python -m convnet.main --config=configs/sweep.py:smoke --workdir=runs/smoke

A run ends by printing its final accuracy and where its files are; a sweep by printing its sweet
spot and the paths of its report and plots. Bad config values, bad data and NaN losses end with one
line on stderr and exit status 1.
"""

import logging
from pathlib import Path

from absl import flags
import jax

from convnet import cli, devices, train
from convnet.errors import ConfigError
from convnet.results import analysis, speeds
from convnet.sweep import driver, settings


def define_flags(values: flags.FlagValues) -> None:
  cli.define_config(values)
  flags.DEFINE_string("workdir", None, "Directory for logs, checkpoints and results.", flag_values=values)
  flags.mark_flag_as_required("workdir", flag_values=values)


def main(values: flags.FlagValues) -> None:
  config, workdir = values.config, Path(values.workdir)
  if settings.is_sweep(config):
    run_sweep(config, workdir)
  else:
    run_single(config, workdir)


def run_sweep(config, workdir: Path) -> None:
  """A sweep (a config with a ``sweep`` group): trains its trials and prints its sweet spot."""
  if devices.cluster_requested(config):
    raise ConfigError("a sweep runs in one process; distributed (many-host) runs are for a single config")
  if settings.of(config).get("executor", {}).get("name", "local") != "ray":  # a Ray driver leaves devices to workers
    devices.check_backend(settings.trial_base(config).get("backend"))  # one line, before anything uses JAX
    logging.getLogger("convnet").info("JAX backend %s, devices %s", jax.default_backend(), jax.devices())
  done = driver.run(config, workdir)
  if done.sweet_spot is not None:
    spot = done.sweet_spot
    tested = f" (test {analysis.test_text(spot)})" if spot.split != "test" else ""
    print(f"{done.answer.text()}")
    fast = f", {speeds.speed_text(spot.speed, spot.cost_mean)}" if spot.speed != speeds.DEFAULT_SPEED else ""
    print(f"sweet spot: {spot.name}: {analysis.accuracy_text(spot)} {spot.split} accuracy{tested} at "
          f"{spot.seconds_mean:.2f} s/epoch{fast}")  # fmt: skip
  else:
    print(f"{analysis.chosen_sweet_spot(done.rows, config.to_dict())[1]} (see the report)")
  print(f"report: {done.files[0]}; also: {', '.join(str(f) for f in done.files[1:])}")


def run_single(config, workdir: Path) -> None:
  """One run: trains it and prints its final accuracy and where its files are."""
  devices.start_distributed(config)  # before anything starts the backend
  devices.check_backend(config.get("backend"))  # the platform asked for, and no silent CPU: one line
  logging.getLogger("convnet").info("JAX backend %s, devices %s", jax.default_backend(), jax.devices())
  summary = train.train_and_evaluate(config, str(workdir))
  if not devices.is_writer():
    return  # process 0 of a many-host run says it
  written = [
    n
    for n in ("config.json", "metrics.jsonl", "summary.json", "checkpoints/", "tensorboard/")
    if (workdir / n).exists()
  ]
  held_out = (f"validation accuracy {100 * summary['validation_accuracy']:.2f}%, "
              if "validation_accuracy" in summary else "")  # fmt: skip
  inferred = (f"; inference {summary['latency_ms']:.2f} ms per image at batch 1, {summary['throughput']:,.0f} "
              f"images/s at batch {summary['throughput_batch']}" if "latency_ms" in summary else "")  # fmt: skip
  print(
    f"{held_out}test accuracy {100 * summary['test_accuracy']:.2f}% after {summary['epoch']} epoch(s), "
    f"{summary['epoch_seconds']:.2f} s/epoch (median){inferred}; files in {workdir}: {', '.join(written)}"
  )


if __name__ == "__main__":
  cli.run(main, define_flags)
