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

from imp_jax.config import base_config


def get_config(arg: str | None = None):
    c = base_config()
    c.name = "cifar10_noise"
    c.replicates = 3
    c.data.name = "cifar10"
    c.data.label_noise = 0.2
    c.data.augment = True
    c.data.normalisation = "imagenet"
    c.model.name = "resnet"
    c.model.width = 16
    c.model.blocks_per_stage = 3
    c.model.init = "kaiming_normal"
    c.model.bias_init = "torch_default"
    c.model.bn_init = "uniform"
    c.train.epochs = 160
    c.train.batch_size = 128
    c.train.lr = 0.1
    c.train.momentum = 0.9
    c.train.weight_decay = 1e-4
    c.train.lr_decay_epochs = (80, 120)
    c.train.lr_decay = 0.1
    c.prune.exclude = ()
    c.prune.count = "openlth"
    c.imp.levels = 30
    c.imp.rewind = "10ep"
    c.checkpoint.every_epochs = 10
    c.log.every_epochs = 10
    if arg == "smoke":
        c.name = "cifar10_noise_smoke"
        c.replicates = 2
        c.data.train_subset = 512
        c.model.width = 4
        c.train.epochs = 2
        c.train.lr_decay_epochs = (1,)
        c.imp.levels = 2
        c.imp.rewind = "1ep"
        c.checkpoint.every_epochs = 1
        c.log.every_epochs = 0
    elif arg:
        raise ValueError(f"unknown variant {arg!r} of cifar10_noise; expected 'smoke'")
    return c
