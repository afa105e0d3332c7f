"""MNIST with 20% label noise: the study's two-layer FCN 784-300-10.

SGD (lr 0.1, batch 128, no momentum), 120 epochs per level, global magnitude pruning of 20% of the
remaining weights per level with the output layer kept dense (as the reference code did),
rewinding to the initial weights. 30 levels reach 0.12% of the prunable weights, well past the
best pruned model and into the collapse after it. The study used 3 replicates.

Variants (``configs/mnist_noise.py:ARG``):
  smoke: 2 000 training examples, 2 epochs, 2 levels, 2 replicates; seconds on a laptop CPU.
"""

from imp_jax.config import base_config


def get_config(arg: str | None = None):
    c = base_config()
    c.name = "mnist_noise"
    c.replicates = 3
    c.data.name = "mnist"
    c.data.label_noise = 0.2
    c.model.hidden = (300,)
    c.model.init = "kaiming_normal"
    c.train.epochs = 120
    c.train.batch_size = 128
    c.train.lr = 0.1
    c.prune.exclude = ("^output/",)
    c.imp.levels = 30
    c.checkpoint.every_epochs = 10
    c.log.every_epochs = 10
    if arg == "smoke":
        c.name = "mnist_noise_smoke"
        c.replicates = 2
        c.data.train_subset = 2000
        c.train.epochs = 2
        c.imp.levels = 2
        c.checkpoint.every_epochs = 1
        c.log.every_epochs = 0
    elif arg:
        raise ValueError(f"unknown variant {arg!r} of mnist_noise; expected 'smoke'")
    return c
