"""Width sweep of the two-layer FCN 784-P-10 on MNIST with 20% label noise: the study's Figure 1.

P in {5, 10, 50, 100, 300, 500, 1000, 2000, 5000, 10000}; everything else as ``mnist_noise.py``
(SGD lr 0.1, batch 128, no momentum, 120 epochs a level, the reference code's pruning count,
3 replicates). As in the study, the widths P >= 1000 rewind (to the weights after one epoch: the
study does not say to which point; change it with ``--config.sweep.overrides``), the others reset
to the initial weights. Every width is pruned until fewer than 100 prunable weights would remain
(or the count needs more than remain).

The output layer: kept dense below P = 2000, as the reference code's default for its MNIST
networks (``pruning_layers_to_ignore='fc.weight'``) does; pruned from P = 2000 on. Under the
reference count every kernel weight, the output layer's included, counts in ``R``, so the levels'
counts are the same either way, but a kept output layer is a floor of 10 P weights, and the
study's best pruned models for P >= 2000 have fewer kernel weights than that (its runs there
must have pruned the output layer too).

Variants (``configs/mnist_widths.py:ARG``):
  smoke: P in {10, 50}, 2 000 training examples, 2 epochs, 2 levels, 2 replicates; rewinding
    (10 steps) from P >= 50, to exercise the override.
  cpu: about 17 minutes on 2 CPU cores (estimated from measured level times). It keeps the
    network, noise and optimiser, and reduces: P in {5, 10, 50, 100, 300, 1000}, 5 000 training
    examples (P=1000 still rewinds), 60 epochs, 2 replicates, 36% of the remaining weights pruned
    per level (two of the study's 20% levels in one).
"""

import ml_collections

from configs import mnist_noise
from imp_jax.sweep import with_sweep


def study(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The study's MNIST sweep settings: rewinding from P >= 1000, pruning until fewer than 100
    prunable weights would remain."""
    c = with_sweep(c)
    c.sweep.overrides = (("width>=1000", "imp.rewind", "1ep"),)
    c.imp.levels = 60
    c.imp.min_weights = 100
    return c


def smoke(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A seconds-long version of an MNIST sweep."""
    c.name += "_smoke"
    c.replicates = 2
    c.data.train_subset = 2000
    c.train.epochs = 2
    c.imp.levels = 2
    c.sweep.overrides = (("width>=50", "imp.rewind", "10it"),)
    c.checkpoint.every_epochs = 1
    c.log.every_epochs = 0
    return c


def cpu(c: ml_collections.ConfigDict, epochs: int = 60) -> ml_collections.ConfigDict:
    """The reductions of an MNIST sweep's ``cpu`` variant (see the module docstring)."""
    c.name += "_cpu"
    c.replicates = 2
    c.data.train_subset = 5000
    c.train.epochs = epochs
    c.prune.fraction = 0.36
    c.checkpoint.every_epochs = 20
    c.log.every_epochs = 0
    return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = study(mnist_noise.get_config())
    c.name = "mnist_widths"
    c.sweep.overrides += (("width>=2000", "prune.exclude", ()),)
    c.sweep.width = (5, 10, 50, 100, 300, 500, 1000, 2000, 5000, 10_000)
    if arg == "smoke":
        c = smoke(c)
        c.sweep.width = (10, 50)
    elif arg == "cpu":
        c = cpu(c)
        c.sweep.width = (5, 10, 50, 100, 300, 1000)
    elif arg:
        raise ValueError(f"unknown variant {arg!r} of mnist_widths; expected 'smoke' or 'cpu'")
    return c
