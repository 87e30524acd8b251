"""Measure inference speed for runs and sweeps trained before it was measured (or again, on this machine).

    python -m convnet.latency --workdir=runs/default
    python -m convnet.latency --workdir=experiments/fashion_mnist_sweet_spot/reference_grid

Every run measures its inference after training (``convnet.inference``); this measures it afterwards,
with the same settings (``--config.inference.*`` of the run's config, or ``--seconds`` and
``--batch_size``). For a run, the figures go into its ``summary.json``. For a sweep directory, each
completed trial's go into its ``summary.json`` and into a new line of ``results.jsonl`` (the journal's
later line for a trial wins; nothing already written is lost); then the report is written again, with
the answer under each meaning of fast. Trials that have figures already are skipped unless ``--again``.

The speed of a network does not depend on its parameters' values: a trial whose checkpoints were not
kept is measured with freshly initialised parameters (``inference_params: "initialised"``). Trials are
measured one after another, on this process's first device; the directory's lock is held (not while a
sweep runs there). Each record says where it was measured (``inference_device``, ``inference_machine``)
and the code (``inference_code``).
"""

from pathlib import Path
from typing import Any

from absl import flags
import jax

from convnet import cli, configuration, inference, input_pipeline, models, steps, trained
from convnet.errors import DataError
from convnet.results import report
from convnet.rundir import checkpoints, files, locks, provenance, runlog
from convnet.sweep import store


def measure_run(workdir: Path, settings: dict[str, Any]) -> dict[str, Any]:
  """The inference figures of the run in ``workdir`` (its checkpoint's network, or an initialised one)."""
  config = files.read_json(workdir / runlog.CONFIG_FILE)
  if config is None:
    raise DataError(f"{workdir / runlog.CONFIG_FILE}: not found; {workdir} is not a convnet run")
  config = {**config, "inference": {**(config.get("inference") or {}), **settings}}
  if checkpoints.latest_epoch(workdir) is not None:
    network = trained.load(workdir)
    model, params, image_shape, kept = network.model, network.params, network.image_shape, "checkpoint"
  else:
    image_shape, num_classes = input_pipeline.peek_shape(config["dataset"])
    model = models.ConvNet(**configuration.model_kwargs(config, num_classes))
    params = steps.create_train_state(jax.random.PRNGKey(config["seed"]), config, image_shape, num_classes).params
    kept = "initialised"
  specs = models.layer_specs(configuration.model_kwargs(config, model.num_classes), image_shape)
  figures = inference.measure(model, params, image_shape, config, jax.devices()[0])
  code = provenance.code_record(models.layer_ops(specs))
  return {**figures, "inference_params": kept, "inference_code": provenance.code_label(code)}


def measure(workdir: str | Path, settings: dict[str, Any], again: bool = False) -> list[tuple[str, dict[str, Any]]]:
  """Measures the run or the sweep in ``workdir`` (see the module); (name, figures) of each measured."""
  workdir = Path(workdir)
  single = not trained.is_sweep(workdir)
  if single:
    trained.find(workdir)  # DataError for a directory that is not there
  with locks.hold(workdir):
    if single:
      summary = files.read_json(workdir / runlog.SUMMARY_FILE) or {}
      if "latency_ms" in summary and not again:
        return []
      figures = measure_run(workdir, settings)
      files.write_json(workdir / runlog.SUMMARY_FILE, {**summary, **figures})
      return [(workdir.name, figures)]
    sweep = store.open_existing(workdir)
    done = []
    for record in sweep.results():
      if record.get("status") != "completed" or ("latency_ms" in record and not again):
        continue
      figures = measure_run(sweep.trial_dir(record["name"]), settings)
      summary = sweep.summary(record["name"])
      if summary is not None:
        files.write_json(sweep.trial_dir(record["name"]) / runlog.SUMMARY_FILE, {**summary, **figures})
      sweep.append_result({**record, **figures})
      done.append((record["name"], figures))
    report.write_report(workdir)
    return done


def define_flags(values: flags.FlagValues) -> None:
  flags.DEFINE_string("workdir", None, "A run or a sweep directory.", flag_values=values)
  flags.DEFINE_float("seconds", None, "Seconds of calls per measurement (default: the run's inference.seconds).",
                     flag_values=values)  # fmt: skip
  flags.DEFINE_integer("batch_size", None, "Images per call for throughput (default: the run's).", flag_values=values)
  flags.DEFINE_bool("again", False, "Measure trials that have figures already, too.", flag_values=values)
  flags.mark_flags_as_required(["workdir"], flag_values=values)


def main(values: flags.FlagValues) -> None:
  settings = {k: v for k, v in (("seconds", values.seconds), ("batch_size", values.batch_size)) if v is not None}
  inference.check_settings({"inference": {"seconds": 1.0, **settings}})
  measured = measure(values.workdir, settings, values.again)
  for name, figures in measured:
    print(f"{name}: {figures['latency_ms']:.3f} ms at batch 1 (p90 {figures['latency_p90_ms']:.3f}), "
          f"{figures['throughput']:,.0f} images/s at batch {figures['throughput_batch']} ({figures['inference_params']})")  # fmt: skip
  print(f"measured {len(measured)} on {jax.devices()[0].device_kind} ({provenance.cpu_name()})"
        + ("" if measured else ": every one has figures already (--again measures them anew)"))  # fmt: skip


if __name__ == "__main__":
  cli.run(main, define_flags)
