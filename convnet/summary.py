"""The Keras-like model table: layer, output shape, parameters, FLOPs per example, and totals.

    python -m convnet.summary --config=configs/default.py [--config.model.features='(32,32)']

The shapes come from ``convnet.models.layer_specs`` (the same arithmetic that checks a config before
training) and the image shape from the data's headers (``input_pipeline.peek_shape``), so nothing is
loaded, trained or even initialised.
"""

from collections.abc import Mapping, Sequence
from typing import Any

from convnet import input_pipeline, models


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


def define_flags(values) -> None:
  from convnet import cli

  cli.define_config(values)


def main(values) -> None:
  print(model_table(values.config.to_dict()))


if __name__ == "__main__":
  from convnet import cli

  cli.run(main, define_flags)
