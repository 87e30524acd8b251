"""The seed network of the TensorFlow course on Fashion-MNIST: 5 epochs, batch 32, Adam 1e-3.

Conv 64@3x3 relu -> max pool 2x2 -> Conv 64@3x3 relu -> max pool 2x2 -> Dense 128 relu -> Dense 10
(VALID padding, 243,786 parameters).

    python -m convnet.main --config=configs/default.py --workdir=runs/default

Measured (experiments/default_run), on the project's 2-core Intel Xeon at commit 3905f4a: 88.61% test
accuracy after epoch 1, 91.09% after epoch 5; median 11.13 s per epoch (compilation, 1.5 s, excluded);
66 s wall in all. Earlier, on a 2-core AMD EPYC: 91.12% at 20.4 s/epoch, then 90.96% at 12.06 s/epoch
with the fused first layer (commit 0479191).
"""

import ml_collections
from ml_collections import config_dict

from convnet import input_pipeline


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0  # drives initialisation and shuffling

  # Data.
  config.dataset = ml_collections.ConfigDict()
  config.dataset.source = "idx"  # 'idx' or 'tfds'
  config.dataset.dir = input_pipeline.DEFAULT_IDX_DIR  # IDX files; if this default is absent, TFDS
  config.dataset.name = "fashion_mnist"  # TFDS name (and the class names for fashion_mnist)
  config.dataset.tfds_data_dir = config_dict.placeholder(str)
  config.dataset.num_train_examples = config_dict.placeholder(int)  # None: all
  config.dataset.num_test_examples = config_dict.placeholder(int)
  # Images held out of the training set for validation (stratified, the same for every seed); 0: none,
  # the course's recipe (all 60,000 train; accuracy on the test set). Sweeps decide on this split.
  config.dataset.validation_size = 0

  # Model: ConvNet(**config.model), every field of convnet.models.ConvNet. kernel_size and pool_size
  # take an int or one int per conv layer (typed `object` so that the command line accepts either:
  # --config.model.kernel_size='(3,5)').
  config.model = ml_collections.ConfigDict()
  config.model.features = (64, 64)  # one conv layer per entry, its filter count
  config.model.kernel_size = config_dict.FieldReference(3, field_type=object)
  config.model.padding = "VALID"  # or 'SAME'
  config.model.pool_size = config_dict.FieldReference(2, field_type=object)  # after each conv; 1 = no pooling
  config.model.dense_features = (128,)  # hidden dense layers before the logits
  config.model.num_classes = config_dict.placeholder(int)  # None: from the data
  config.model.ops = "auto"  # 'auto': 'fast' (convnet.ops) on CPU, 'flax' (nn.Conv / nn.max_pool) on GPU/TPU
  config.model.crop_to_pool = True  # VALID convs computed only where their max pool looks
  config.model.fuse_max_channels = 4  # conv layers with <= this many input channels: one fused op; 0 = off
  config.model.dtype = "float32"  # computation dtype: 'float32' or 'bfloat16' (parameters stay float32)

  # Optimizer.
  config.optimizer = "adam"  # 'adam' or 'sgd'
  config.learning_rate = 1e-3
  config.momentum = 0.9  # sgd only

  # Training.
  config.num_epochs = 5
  config.batch_size = 32
  config.eval_batch_size = 500  # the whole test set is scored; a last partial batch is padded and masked
  config.stop_at = config_dict.placeholder(float)  # e.g. 0.95: stop once train accuracy reaches it
  config.steps_per_call = 125  # train steps per compiled call (progress granularity); 0 = whole epoch

  # Devices and numerics (none of these changes a result beyond float rounding; a run may resume on others).
  # backend None: JAX's default, but a host with an accelerator that fell back to the CPU is an error;
  # 'cpu', 'gpu' or 'tpu': that platform (set before JAX starts), or an error.
  config.backend = config_dict.placeholder(str)
  config.num_devices = config_dict.placeholder(int)  # data parallel over this many local devices; None: all
  # CPU devices, one GPU or TPU (docs/accelerators.md)
  config.distributed = False  # True: jax.distributed.initialize() first (many hosts; also set by a cluster's env)
  # Matmuls and convolutions: 'float32' (GPU and TPU agree with the CPU to float32 rounding), 'tensorfloat32'
  # or 'bfloat16' (faster one-pass modes of GPUs/TPUs), 'default' (JAX's per backend). The CPU computes float32.
  config.matmul_precision = "float32"
  config.deterministic = False  # True: XLA's deterministic GPU ops (run-to-run identical, slower); set at start

  # Inference speed, measured after training on the device it trained on (src/convnet/inference.py): batch-1
  # latency and throughput at batch_size images per call, each over calls for about seconds / 2; 0: not measured.
  config.inference = ml_collections.ConfigDict()
  config.inference.seconds = 1.0
  config.inference.batch_size = 1024

  # Logging.
  config.checkpoint = True  # orbax checkpoint after each epoch; resume on re-run
  config.tensorboard = True
  config.progress = True  # progress bar on a terminal
  return config
