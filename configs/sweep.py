"""The accuracy/speed sweep: filters x kernel size x seeds on the seed network (configs/default.py).

    python -m convnet.main --config=configs/sweep.py --workdir=runs/sweep          # 8 configs x 3 seeds
    python -m convnet.main --config=configs/sweep.py:smoke --workdir=/tmp/s         # seconds: 2x2 grid
    python -m convnet.main --config=configs/sweep.py:depth --workdir=runs/depth     # 1, 2, 3 conv blocks
    python -m convnet.main --config=configs/sweep.py --workdir=runs/pruned --config.prune=pareto  # Pareto pruning
    python -m convnet.main --config=configs/sweep.py:wide --workdir=runs/wide       # per-layer filters, pruned
    python -m convnet.main --config=configs/sweep.py --workdir=runs/sweep --config.sweep.seeds='(0,1,2,3,4)'
    python -m convnet.report --workdir=runs/sweep                                   # re-make the report
    python -m convnet.main --config=configs/sweep.py --workdir=runs/sweep --config.executor=ray  # on Ray

``config.sweep`` holds the axes: each field is a tuple of values for the config field of the same
name (``seeds`` sets ``seed``; ``model__padding`` names ``model.padding`` where a leaf is ambiguous).
The axes combine as a product, except the groups in ``config.sweep_zip``, which move together.
``config.report`` picks the sweet spot. Measured results: experiments/fashion_mnist_sweet_spot/.
"""

from pathlib import Path

import ml_collections
from ml_collections import config_dict

from convnet import configuration
from convnet.errors import ConfigError


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  config = configuration.load_config(Path(__file__).with_name("default.py"))
  config.sweep = ml_collections.ConfigDict()
  config.sweep.features = ((16, 16), (32, 32), (64, 64), (128, 128))  # same count in both conv layers
  config.sweep.kernel_size = (3, 5)
  config.sweep.seeds = (0, 1, 2)
  config.sweep_zip = ()  # e.g. (('features', 'kernel_size'),): those axes advance together
  config.report = ml_collections.ConfigDict()
  # The sweet spot: the fastest configuration whose mean test accuracy is within one standard
  # deviation (over seeds) of the best mean ('within_std'), or within `tolerance` ('within_tolerance').
  config.report.rule = "within_std"
  config.report.tolerance = 0.005
  config.progress = False  # one line per epoch in the log instead of a bar per trial
  # A re-run retries trials that failed for reasons outside them (I/O, data, a crash); True: also
  # those that failed on their own (a NaN or diverged loss, a bad value).
  config.retry_failed = False

  # Pareto pruning (convnet/pruning.py): None trains every trial to num_epochs (the full grid);
  # 'pareto' stops, after each rung of epochs, the configurations that a faster one matches in accuracy
  # within prune_margin standard deviations over seeds (prune_one_seed_margin points with one seed).
  config.prune = config_dict.placeholder(str)
  config.prune_rungs = (1, 2)
  config.prune_margin = 1.0
  config.prune_one_seed_margin = 0.005
  config.prune_keep_leaders = True  # never stop one within the margin of the rung's most accurate

  # Where trials run (none of these changes a trial's name or result; see convnet/executors.py).
  config.executor = "local"  # 'local': here, one after another; 'ray': side by side on a Ray cluster
  config.ray_address = config_dict.placeholder(str)  # None: start a local Ray; 'auto' or 'host:port': join one
  config.trial_resources = ml_collections.ConfigDict()  # what one trial takes on Ray (fractions allowed)
  config.trial_resources.cpu = 1.0
  config.trial_resources.gpu = config_dict.placeholder(float)  # None: 1 where the cluster has GPUs, else 0
  config.max_failures = 2  # Ray: a trial whose worker is lost runs again (from its checkpoint) this often
  config.seeds_together = False  # True: the seeds of a configuration train as one vmapped program

  if variant == "smoke":  # a quick look on a small real subset: 4 trials, seconds each
    config.dataset.num_train_examples = 2000
    config.dataset.num_test_examples = 1000
    config.num_epochs = 1
    config.sweep.features = ((8, 8), (16, 16))
    config.sweep.seeds = (0,)
  elif variant == "depth":  # the course's exercise: remove or add a conv layer (64 filters each)
    config.sweep.features = ((64,), (64, 64), (64, 64, 64))
    config.sweep.kernel_size = (3,)
  elif variant == "wide":  # each conv layer's filters on its own (16..128 x 16..128) x kernel 3, 5: 96 trials
    counts = (16, 32, 64, 128)
    config.sweep.features = tuple((first, second) for first in counts for second in counts)
    config.prune = "pareto"  # the full grid is 480 trial-epochs; --config.prune=None trains them all
  elif variant:
    raise ConfigError(f"configs/sweep.py has no variant {variant!r}; use configs/sweep.py, :smoke, :depth or :wide")
  return config
