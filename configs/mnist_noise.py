"""MNIST with 20% label noise: the study's two-layer FCN 784-300-10.

SGD (lr 0.1, batch 128, no momentum), 120 epochs per level, rewinding to the initial weights, the
study used 3 replicates. Pruning follows the reference code (an OpenLTH fork): global magnitude
pruning of 20% of the remaining weights per level counted as OpenLTH counts them
(``prune.count="openlth"``: ``ceil(0.2 R) + 1`` removed, ``R`` every kernel weight still in the
mask), so the levels land on the study's published counts (238 200, 190 559, 152 446, ...), with
the output layer kept dense (the reference code's ``pruning_layers_to_ignore='fc.weight'`` for its
MNIST networks). Dense biases start as PyTorch initialises them (the reference code re-initialises
only the kernels). With the output layer's 3 000 weights always counted, level 19 (3 427 kernel
weights, 427 of them in the hidden layer) is the last the count allows: the run stops there,
past the best pruned model and into the collapse after it.

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
    c.model.bias_init = "torch_default"
    c.train.epochs = 120
    c.train.batch_size = 128
    c.train.lr = 0.1
    c.prune.exclude = ("^output/",)
    c.prune.count = "openlth"
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
