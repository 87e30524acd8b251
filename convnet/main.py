"""Command line: train one config, or run a sweep when the config has a ``sweep`` group.

    python -m convnet.main --config=configs/default.py --workdir=runs/default
    python -m convnet.main --config=configs/default.py --workdir=runs/quick --config.num_epochs=1

Bad config values, bad data and NaN losses end with one line on stderr and exit status 1.
"""

from convnet import runtime

runtime.configure_xla()  # before jax is imported, anywhere

import logging  # noqa: E402

from absl import flags  # noqa: E402
import jax  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from convnet import cli  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to a config file (configs/default.py).", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for logs, checkpoints and results.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  logging.getLogger("convnet").info("JAX backend %s, devices %s", jax.default_backend(), jax.devices())
  config = FLAGS.config
  if "sweep" in config:
    from convnet import sweep

    sweep.run(config, FLAGS.workdir)
  else:
    from convnet import train

    train.train_and_evaluate(config, FLAGS.workdir)


if __name__ == "__main__":
  cli.run(main)
