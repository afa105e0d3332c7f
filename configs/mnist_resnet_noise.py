"""MNIST with 20% label noise: the study's "ResNet-6" (3 stages of 1 basic block, widths W, 2W,
4W) with W=8.

SGD (lr 0.1, momentum 0.9, batch 128), 120 epochs per level, global magnitude pruning of 20% of
the remaining weights per level counted as the reference code counts them (``prune.count=
"openlth"``), with the output layer kept dense (as the reference code did for its MNIST networks),
rewinding to the initial weights; no augmentation. Initialised as the reference code does:
BatchNorm scales U(0, 1), the output bias as PyTorch's default. 30 levels reach 0.12% of the
prunable weights. The study used 3 replicates and W in {1, 2, 5, 8, 11, 15, 20, 40, 80, 120}
(``--config.model.width``).

Variants (``configs/mnist_resnet_noise.py:ARG``):
  smoke: W=2, 2 000 training examples, 2 epochs, 2 levels, 2 replicates; seconds on a laptop CPU.
"""

from configs import mnist_noise, variants

STUDY = {
    "name": "mnist_resnet_noise", "replicates": 3,
    "data.name": "mnist", "data.label_noise": 0.2,
    "model.name": "resnet", "model.width": 8, "model.blocks_per_stage": 1,
    "model.init": "kaiming_normal", "model.bias_init": "torch_default", "model.bn_init": "uniform",
    "train.epochs": 120, "train.batch_size": 128, "train.lr": 0.1, "train.momentum": 0.9,
    "prune.exclude": ("^output/",), "prune.count": "openlth",
    "imp.levels": 30, "checkpoint.every_epochs": 10,
}


def get_config(arg: str | None = None):
    return variants.build(STUDY, arg, smoke={"name": "mnist_resnet_noise_smoke",
                                             **mnist_noise.SMOKE, "model.width": 2})
