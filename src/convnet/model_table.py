"""The Keras-like model table: layer, output shape, parameters, FLOPs per example, and totals.

    python -m convnet.model_table --config=configs/default.py [--config.model.features='(32,32)']
    python -m convnet.model_table --config=configs/sweep.py:depth     # each architecture of a sweep

The shapes come from ``convnet.models.layer_specs`` (the same arithmetic that checks a config before
training) and the image shape from the data's headers (``input_pipeline.peek_shape``), so nothing is
loaded, trained or even initialised. For a sweep config it prints one table per distinct architecture
of its trials (the configurations that share one are named together; an impossible one says why).
"""

from collections.abc import Mapping, Sequence
import json
from typing import Any

from convnet import cli, input_pipeline, models
from convnet.errors import ConfigError
from convnet.sweep import settings, trials


def format_table(specs: Sequence[models.LayerSpec], input_shape: Sequence[int]) -> str:
  """The table as text; one row per layer and a totals block."""
  rows = [("Layer (type)", "Output shape", "Param #", "FLOPs")]
  rows.append(("input (Input)", str((None, *input_shape)), "0", "0"))
  for spec in specs:
    rows.append((f"{spec.name} ({spec.kind})", str((None, *spec.output_shape)), f"{spec.params:,}", f"{spec.flops:,}"))
  widths = [max(len(r[i]) for r in rows) for i in range(4)]
  rule = "-" * (sum(widths) + 6)

  def line(row):
    return f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:>{widths[2]}}  {row[3]:>{widths[3]}}"

  total_params = sum(s.params for s in specs)
  total_flops = sum(s.flops for s in specs)
  flatten = next((s for s in specs if s.kind == "Flatten"), None)
  pixels = 1
  for d in input_shape:
    pixels *= d
  return "\n".join([
      "=" * len(rule), line(rows[0]), "=" * len(rule), *(line(r) for r in rows[1:]), "=" * len(rule),
      f"Total params: {total_params:,} ({total_params * 4 / 1024:,.1f} KiB as float32)",
      f"Forward FLOPs per example: {total_flops:,} ({total_flops / 1e6:.2f} MFLOP; multiply-add = 2)",
      f"Flattened features: {flatten.output_shape[0]:,} (input pixels: {pixels:,})" if flatten else "",
  ]).rstrip()  # fmt: skip


def model_table(config: Mapping[str, Any]) -> str:
  image_shape, num_classes = input_pipeline.peek_shape(config["dataset"])
  model_config = dict(config["model"])
  if model_config.get("num_classes") is None:
    model_config["num_classes"] = num_classes
  return format_table(models.layer_specs(model_config, image_shape), image_shape)


def sweep_tables(config) -> str:
  """One table per distinct architecture (``config.model`` after the axes) of a sweep config's trials."""
  architectures: dict[str, list[trials.Trial]] = {}
  for trial in trials.expand(config):
    key = json.dumps(trial.config.model.to_dict(), sort_keys=True, default=str)
    architectures.setdefault(key, []).append(trial)
  parts = []
  for group in architectures.values():
    names = list(dict.fromkeys(t.configuration for t in group))
    try:
      table = model_table(group[0].config.to_dict())
    except ConfigError as e:
      table = f"(impossible: {e})"
    parts.append(f"{' | '.join(names)}\n{table}")
  return f"{len(architectures)} architecture(s) in this sweep:\n\n" + "\n\n".join(parts)


def define_flags(values) -> None:
  cli.define_config(values)


def main(values) -> None:
  config = values.config
  print(sweep_tables(config) if settings.is_sweep(config) else model_table(config.to_dict()))


if __name__ == "__main__":
  cli.run(main, define_flags)
