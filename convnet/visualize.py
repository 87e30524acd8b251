"""Pictures of a trained run: layer activations and the first layer's learned filters.

    python -m convnet.visualize --plot=activations --workdir=runs/default --images=0,23,28 --filter=1 --out=act.png
    python -m convnet.visualize --plot=filters --workdir=runs/default --out=filters.png

``--images`` defaults to the first three test images of test image 0's class, as in the course.
"""

from pathlib import Path

from absl import flags

from convnet import cli

PLOTS = ("activations", "filters")


def define_flags(values: flags.FlagValues) -> None:
  flags.DEFINE_enum("plot", None, PLOTS, "What to draw.", flag_values=values)
  flags.DEFINE_string("workdir", None, "A trained run's workdir (config.json + checkpoints).", flag_values=values)
  flags.DEFINE_list("images", None, "Test image indices, e.g. 0,23,28 (default: three of image 0's class).",
                    flag_values=values)  # fmt: skip
  flags.DEFINE_integer("filter", 1, "Which filter of each conv/pool layer to show.", flag_values=values)
  flags.DEFINE_string("out", None, "Output PNG path.", flag_values=values)
  flags.mark_flags_as_required(["plot", "workdir", "out"], flag_values=values)


def main(values: flags.FlagValues) -> None:
  from convnet import inspect

  run = inspect.load_run(values.workdir)
  if values.plot == "activations":
    try:
      indices = [int(i) for i in values.images] if values.images else inspect.default_images(run.data.test_labels)
    except ValueError:
      cli.fail(f"--images={','.join(values.images)} must be comma-separated integers")
    figure = inspect.activation_figure(run, indices, values.filter)
  else:
    figure = inspect.filters_figure(run)
  Path(values.out).parent.mkdir(parents=True, exist_ok=True)
  figure.savefig(values.out)
  print(f"wrote {values.out}")


if __name__ == "__main__":
  cli.run(main, define_flags)
