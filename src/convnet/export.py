"""Export a trained network: a serialized ``jax.export`` artifact that runs without convnet or Flax.

    python -m convnet.export --workdir=runs/default --out=exported/model.jax

``--workdir`` is a run, or a sweep directory (its sweet spot's trial, or ``--trial``: see
``convnet.trained.find``). It writes two files:

* ``--out``: the network's forward pass with its trained parameters inside, as StableHLO
  (``jax.export``, :data:`PLATFORMS` by default): ``float32[batch, H, W, C]`` pixels in [0, 1] ->
  ``float32[batch, num_classes]`` logits, for any batch size;
* the same path with ``.json``: class names, input shape and dtype, how to prepare a picture (as
  ``convnet.predict`` does), the run, its epoch and test accuracy, and the code that made it.

Using it needs only jax and numpy (docs/inference.md has the ten lines)::

    exported = jax.export.deserialize(open("exported/model.jax", "rb").read())
    logits = exported.call(images)          # images: float32 (N, 28, 28, 1) in [0, 1]
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from absl import flags
import jax
from jax import export as jax_export
import jax.numpy as jnp

from convnet import cli, trained
from convnet.errors import ConfigError
from convnet.rundir import files

PLATFORMS = ("cpu", "cuda", "tpu")  # one artifact for each backend JAX has; --platforms narrows it
PREPARE = (
  "grey; a light object on a dark background (invert a picture whose border is light on average, mean pixel "
  "above 128); fitted into the image size keeping its aspect ratio and padded with its background; pixels / 255"
)


def metadata_path(out: str | Path) -> Path:
  """Where the JSON beside the artifact ``out`` goes: ``out`` with the suffix ``.json``."""
  out = Path(out)
  if out.suffix == ".json":
    raise ConfigError(f"--out={out}: the artifact needs another name than its .json (e.g. {out.with_suffix('.jax')})")
  return out.with_suffix(".json")


def exported(network: trained.Network, platforms: Sequence[str] = PLATFORMS) -> jax_export.Exported:
  """``network``'s forward pass (parameters inside) exported for ``platforms`` with a symbolic batch size."""
  unknown = [p for p in platforms if p not in ("cpu", "cuda", "rocm", "tpu")]
  if unknown or not platforms:
    raise ConfigError(f"--platforms={','.join(platforms)} is not allowed; use some of cpu, cuda, rocm, tpu")

  def logits(images):
    return network.model.apply({"params": network.params}, images)

  (batch,) = jax_export.symbolic_shape("batch")
  shape = jax.ShapeDtypeStruct((batch, *network.image_shape), jnp.float32)
  return jax_export.export(jax.jit(logits), platforms=tuple(platforms))(shape)


def metadata(network: trained.Network, found: trained.Found, artifact: jax_export.Exported) -> dict[str, Any]:
  summary = network.summary or {}
  return {
    "format": "jax.export",
    "calling_convention_version": artifact.calling_convention_version,
    "platforms": list(artifact.platforms),
    "input": {"shape": [None, *network.image_shape], "dtype": "float32", "range": [0.0, 1.0], "layout": "NHWC"},
    "output": {
      "shape": [None, len(network.class_names)],
      "dtype": "float32",
      "meaning": "logits (softmax: probabilities)",
    },
    "class_names": list(network.class_names),
    "prepare": PREPARE,
    "run": str(network.workdir),
    "chosen": found.why or "the run given",
    "epoch": network.epoch,
    "test_accuracy": summary.get("test_accuracy"),
    "num_params": summary.get("num_params"),
    "jax_version": jax.__version__,
    "code": summary.get("code"),
  }


def export(workdir: str, out: str, trial: str | None = None, platforms: Sequence[str] = PLATFORMS) -> list[Path]:
  """Writes the artifact and its JSON (atomically); their paths."""
  json_path = metadata_path(out)
  found = trained.find(workdir, trial)
  network = trained.load(found.workdir)
  artifact = exported(network, platforms)
  files.atomic_write_bytes(Path(out), bytes(artifact.serialize()))
  files.write_json(json_path, metadata(network, found, artifact))
  return [Path(out), json_path]


def define_flags(values: flags.FlagValues) -> None:
  flags.DEFINE_string("workdir", None, "A trained run, or a sweep directory (its sweet spot).", flag_values=values)
  flags.DEFINE_string("trial", None, "In a sweep directory: a trial or configuration to use instead.",
                      flag_values=values)  # fmt: skip
  flags.DEFINE_string("out", None, "The artifact's path (its JSON goes beside it, with .json).", flag_values=values)
  flags.DEFINE_list("platforms", list(PLATFORMS), "Backends the artifact runs on.", flag_values=values)
  flags.mark_flags_as_required(["workdir", "out"], flag_values=values)


def main(values: flags.FlagValues) -> None:
  written = export(values.workdir, values.out, values.trial, values.platforms)
  print(f"wrote {written[0]} ({written[0].stat().st_size:,} bytes) and {written[1]}")


if __name__ == "__main__":
  cli.run(main, define_flags)
