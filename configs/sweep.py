"""The accuracy/speed sweep: filters x kernel size x seeds on the seed network (configs/default.py).

    python -m convnet.main --config=configs/sweep.py --workdir=runs/sweep          # 8 configs x 3 seeds
    python -m convnet.main --config=configs/sweep.py:smoke --workdir=/tmp/s         # seconds: 2x2 grid
    python -m convnet.main --config=configs/sweep.py:depth --workdir=runs/depth     # 1, 2, 3 conv blocks
    python -m convnet.main --config=configs/sweep.py --workdir=runs/pruned --config.sweep.prune.method=pareto
    python -m convnet.main --config=configs/sweep.py:wide --workdir=runs/wide       # per-layer filters, pruned
    python -m convnet.main --config=configs/sweep.py --workdir=runs/sweep --config.sweep.axes.seeds='(0,1,2,3,4)'
    python -m convnet.report --workdir=runs/sweep                                   # re-make the report
    python -m convnet.main --config=configs/sweep.py --workdir=runs/sweep --config.sweep.executor.name=ray

Everything sweep-level lives in ``config.sweep`` (``convnet.sweep.settings``); every other field is
the trials' config. ``config.sweep.axes`` holds the axes: each field is a tuple of values for the
config field of the same name (``seeds`` sets ``seed``; ``model__padding`` names ``model.padding``
where a leaf is ambiguous). The axes combine as a product, except the groups in ``config.sweep.zip``,
which move together. ``config.sweep.report`` picks the sweet spot. Measured results:
experiments/fashion_mnist_sweet_spot/.
"""

from pathlib import Path

import ml_collections
from ml_collections import config_dict

from convnet import configuration
from convnet.errors import ConfigError


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  config = configuration.load_config(Path(__file__).with_name("default.py"))
  config.progress = False  # one line per epoch in the log instead of a bar per trial
  # Every decision (pruning, the front, the sweet spot) reads accuracy on this many training images,
  # held out (convnet.input_pipeline.validation_indices); test accuracy is measured and only reported.
  config.dataset.validation_size = 10_000
  config.sweep = sweep = ml_collections.ConfigDict()
  sweep.axes = ml_collections.ConfigDict()
  sweep.axes.features = ((16, 16), (32, 32), (64, 64), (128, 128))  # same count in both conv layers
  sweep.axes.kernel_size = (3, 5)
  sweep.axes.seeds = (0, 1, 2)
  sweep.zip = ()  # e.g. (('features', 'kernel_size'),): those axes advance together
  # Axes that are not costs (e.g. ('learning_rate',)): chosen per architecture on validation accuracy
  # before the front and the sweet spot are built, so that two learning rates of one network never
  # both sit on the speed front.
  sweep.tuned = ()
  # The sweet spot (src/convnet/results/analysis.py), on mean validation accuracy over seeds:
  # 'exchange_rate': the best accuracy - per_doubling x log2(s/epoch): a network twice as slow must be
  # per_doubling (0.005: half a point) more accurate to be preferred; 'within_std': the fastest within one
  # std over seeds of the best mean; 'within_tolerance': the fastest within `tolerance` of it. The report
  # says how sure the answer is: decided when the rule picks it in >= `confidence` of the draws over the seeds.
  sweep.report = ml_collections.ConfigDict()
  sweep.report.rule = "exchange_rate"
  sweep.report.per_doubling = 0.005
  sweep.report.tolerance = 0.005
  sweep.report.confidence = 0.9
  # What "fast" means (src/convnet/results/speeds.py): 'train_time' (s/epoch), 'latency' (batch-1 inference),
  # 'throughput' (inference images/s), 'flops' or 'params'. The report also shows the answer under each.
  sweep.report.speed = "train_time"
  # A re-run retries trials that failed for reasons outside them (I/O, data, a crash); True: also
  # those that failed on their own (a NaN or diverged loss, a bad value).
  sweep.retry_failed = False
  # True: the trials that differ only in seed and learning rate train as one vmapped program (on a GPU, how
  # batch-32 trials fill the device); still one trial directory and result line each
  sweep.seeds_together = False

  # Pareto pruning (src/convnet/sweep/strategies.py): None trains every trial to num_epochs (the full
  # grid); 'pareto' stops, after each rung of epochs, the configurations that a faster one matches in
  # accuracy within `margin` standard deviations over seeds (`one_seed_margin` points with one seed).
  sweep.prune = ml_collections.ConfigDict()
  sweep.prune.method = config_dict.placeholder(str)
  sweep.prune.rungs = (1, 2)
  sweep.prune.margin = 1.0
  sweep.prune.one_seed_margin = 0.005
  sweep.prune.keep_leaders = True  # never stop one within the margin of the rung's most accurate
  # Racing (src/convnet/sweep/racing.py), method 'race': every configuration starts with `initial_seeds` of
  # sweep.axes.seeds (the pool); at each rung a configuration that is the sweet spot in fewer than `stop_below` of
  # the draws over the seeds stops when the front without it keeps 1 - `front_loss` of its hypervolume in all but
  # `stop_below` of them, and one sure to be on the front (speeds within `speed_margin` count as equal) but out of
  # contention may train fewer seeds on (`front_seeds`); then seeds are added to those still in contention until the
  # answer is sweep.report.confidence sure, the pool is used up, or `budget` trial-epochs are spent (None: the pool).
  sweep.prune.initial_seeds = 2
  sweep.prune.stop_below = 0.05
  sweep.prune.speed_margin = 0.05
  sweep.prune.front_loss = 0.01
  sweep.prune.front_seeds = config_dict.placeholder(int)  # None: such a configuration keeps all its seeds
  sweep.prune.budget = config_dict.placeholder(int)

  # Where trials run (none of these changes a trial's name or result; src/convnet/sweep/executors/).
  sweep.executor = ml_collections.ConfigDict()
  sweep.executor.name = "local"  # 'local': here, one after another; 'ray': side by side on a Ray cluster
  # local: trials at once, each on its own devices; None: one per device (num_devices each) on a GPU/TPU host,
  # one at a time on the CPU (timings comparable)
  sweep.executor.side_by_side = config_dict.placeholder(int)
  sweep.executor.ray_address = config_dict.placeholder(str)  # None: start a local Ray; 'auto' or 'host:port'
  sweep.executor.trial_resources = ml_collections.ConfigDict()  # what one trial takes on Ray (fractions allowed)
  sweep.executor.trial_resources.cpu = 1.0
  sweep.executor.trial_resources.gpu = config_dict.placeholder(float)  # None: 1 where the cluster has GPUs, else 0
  sweep.executor.max_failures = 2  # Ray: a trial whose worker is lost runs again (from its checkpoint) this often

  if variant == "smoke":  # a quick look on a small real subset: 4 trials, seconds each
    config.dataset.num_train_examples = 2000
    config.dataset.num_test_examples = 1000
    config.dataset.validation_size = 1000
    config.num_epochs = 1
    sweep.axes.features = ((8, 8), (16, 16))
    sweep.axes.seeds = (0,)
    sweep.prune.method = None  # one seed: every trial to the end; the report calls it a smoke check
    config.inference.seconds = 0.2  # a quick look at inference speed, too
  elif variant == "depth":  # the course's exercise: remove or add a conv layer (64 filters each)
    sweep.axes.features = ((64,), (64, 64), (64, 64, 64))
    sweep.axes.kernel_size = (3,)
  elif variant == "wide":  # each conv layer's filters on its own (16..128 x 16..128) x kernel 3, 5: 96 trials
    counts = (16, 32, 64, 128)
    sweep.axes.features = tuple((first, second) for first in counts for second in counts)
    sweep.prune.method = "pareto"  # the full grid is 480 trial-epochs; --config.sweep.prune.method=None trains all
  elif variant:
    raise ConfigError(f"configs/sweep.py has no variant {variant!r}; use configs/sweep.py, :smoke, :depth or :wide")
  return config
