"""MNIST with 20% label noise: the study's "ResNet-6" (3 stages of 1 basic block, widths W, 2W,
4W) with W=8.

SGD (lr 0.1, momentum 0.9, batch 128), 120 epochs per level, global magnitude pruning of 20% of
the remaining weights per level counted as the reference code counts them (``prune.count=
"openlth"``), with the output layer kept dense (as the reference code did for its MNIST networks),
rewinding to the initial weights; no augmentation. Initialised as the reference code does:
BatchNorm scales U(0, 1), the output bias as PyTorch's default. 30 levels reach 0.12% of
the prunable weights. The study used 3 replicates and W in {1, 2, 5, 8, 11, 15, 20, 40, 80, 120}
(``--config.model.width``).

Variants (``configs/mnist_resnet_noise.py:ARG``):
  smoke: W=2, 2 000 training examples, 2 epochs, 2 levels, 2 replicates; seconds on a laptop CPU.
"""

from imp_jax.config import base_config


def get_config(arg: str | None = None):
    c = base_config()
    c.name = "mnist_resnet_noise"
    c.replicates = 3
    c.data.name = "mnist"
    c.data.label_noise = 0.2
    c.model.name = "resnet"
    c.model.width = 8
    c.model.blocks_per_stage = 1
    c.model.init = "kaiming_normal"
    c.model.bias_init = "torch_default"
    c.model.bn_init = "uniform"
    c.train.epochs = 120
    c.train.batch_size = 128
    c.train.lr = 0.1
    c.train.momentum = 0.9
    c.prune.exclude = ("^output/",)
    c.prune.count = "openlth"
    c.imp.levels = 30
    c.checkpoint.every_epochs = 10
    c.log.every_epochs = 10
    if arg == "smoke":
        c.name = "mnist_resnet_noise_smoke"
        c.replicates = 2
        c.data.train_subset = 2000
        c.model.width = 2
        c.train.epochs = 2
        c.imp.levels = 2
        c.checkpoint.every_epochs = 1
        c.log.every_epochs = 0
    elif arg:
        raise ValueError(f"unknown variant {arg!r} of mnist_resnet_noise; expected 'smoke'")
    return c
