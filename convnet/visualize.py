"""Pictures of a trained run: layer activations and the first layer's learned filters.

    python -m convnet.visualize activations --workdir=runs/default --images=0,23,28 --filter=1 --out=act.png
    python -m convnet.visualize filters --workdir=runs/default --out=filters.png

``--images`` defaults to the first three test images of test image 0's class, as in the course.
"""

from convnet import runtime

runtime.configure_xla()

from pathlib import Path  # noqa: E402

from absl import flags  # noqa: E402

from convnet import cli, inspect  # noqa: E402

COMMANDS = ("activations", "filters")
flags.DEFINE_string("workdir", None, "A trained run's workdir (config.json + checkpoints).")
flags.DEFINE_list("images", None, "Test image indices, e.g. 0,23,28 (default: three of image 0's class).")
flags.DEFINE_integer("filter", 1, "Which filter of each conv/pool layer to show.")
flags.DEFINE_string("out", None, "Output PNG path.")
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) != 2 or argv[1] not in COMMANDS:
    cli.fail(f"give one command, {' or '.join(COMMANDS)}; got {argv[1:] or 'none'}")
  if not FLAGS.workdir or not FLAGS.out:
    cli.fail("--workdir and --out are required")
  run = inspect.load_run(FLAGS.workdir)
  if argv[1] == "activations":
    try:
      indices = [int(i) for i in FLAGS.images] if FLAGS.images else inspect.default_images(run.data.test_labels)
    except ValueError:
      cli.fail(f"--images={','.join(FLAGS.images)} must be comma-separated integers")
    figure = inspect.activation_figure(run, indices, FLAGS.filter)
  else:
    figure = inspect.filters_figure(run)
  Path(FLAGS.out).parent.mkdir(parents=True, exist_ok=True)
  figure.savefig(FLAGS.out)
  print(f"wrote {FLAGS.out}")


if __name__ == "__main__":
  cli.run(main, allow_positional=True)
