"""CIFAR-10 with 20% label noise: the study's CIFAR "ResNet-18" (3 stages of 3 basic blocks,
widths W, 2W, 4W; 20 layers) with W=16.

SGD (lr 0.1, momentum 0.9, batch 128, weight decay 1e-4), 160 epochs per level with the learning
rate x0.1 at epochs 80 and 120, random flip + 4-pixel-padded crop, global magnitude pruning of
20% of the remaining weights per level with nothing excluded and counted as OpenLTH counts
(``prune.count="openlth"``), rewinding to epoch 10 (the reference code's defaults). As in the
reference code, the images are standardised with ImageNet's channel statistics (its CIFAR-10
loader does so; ``data.normalisation="dataset"`` uses CIFAR-10's own), the BatchNorm scales start
U(0, 1) and the output bias as PyTorch's default. 30 levels reach 0.12% of the prunable weights.
The study used 3 replicates and W in {2, 5, 8, 11, 15, 20, 40, 60, 80, 100, 120, 150}
(``--config.model.width``); ``--config.data.classes=5`` keeps only the first 5 classes, as in
its task-difficulty study.

Variants (``configs/cifar10_noise.py:ARG``):
  smoke: W=4, 512 training examples, 2 epochs, 2 levels, 2 replicates; seconds on a laptop CPU.
"""

from configs import mnist_noise, variants

STUDY = {
    "name": "cifar10_noise", "replicates": 3,
    "data.name": "cifar10", "data.label_noise": 0.2, "data.augment": True,
    "data.normalisation": "imagenet",
    "model.name": "resnet", "model.width": 16, "model.blocks_per_stage": 3,
    "model.init": "kaiming_normal", "model.bias_init": "torch_default", "model.bn_init": "uniform",
    "train.epochs": 160, "train.batch_size": 128, "train.lr": 0.1, "train.momentum": 0.9,
    "train.weight_decay": 1e-4, "train.lr_decay_epochs": (80, 120), "train.lr_decay": 0.1,
    "prune.exclude": (), "prune.count": "openlth",
    "imp.levels": 30, "imp.rewind": "10ep", "checkpoint.every_epochs": 10,
}


def get_config(arg: str | None = None):
    return variants.build(STUDY, arg, smoke={
        "name": "cifar10_noise_smoke", **mnist_noise.SMOKE, "data.train_subset": 512,
        "model.width": 4, "train.lr_decay_epochs": (1,), "imp.rewind": "1ep"})
