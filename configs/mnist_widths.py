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

from configs import mnist_noise, variants
from imp_jax.study.sweep import with_sweep

# The reductions of an MNIST sweep's cpu variant (see the module docstring).
CPU = {"replicates": 2, "data.train_subset": 5000, "train.epochs": 60, "prune.fraction": 0.36,
       "checkpoint.every_epochs": 20}


def study(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The study's MNIST sweep settings: rewinding from P >= 1000, pruning until fewer than 100
    prunable weights would remain."""
    return variants.apply(with_sweep(c), {
        "sweep.overrides": (("width>=1000", "imp.rewind", "1ep"),), "imp.levels": 60,
        "imp.min_weights": 100})


def smoke(c: ml_collections.ConfigDict, widths: tuple[int, ...] = (10, 50)
          ) -> ml_collections.ConfigDict:
    """A seconds-long version of an MNIST sweep; rewinding (10 steps) from P >= 50, to exercise
    the override."""
    return variants.apply(c, {"name": c.name + "_smoke", **mnist_noise.SMOKE,
                              "sweep.overrides": (("width>=50", "imp.rewind", "10it"),),
                              "sweep.width": widths})


def cpu(c: ml_collections.ConfigDict, widths: tuple[int, ...] | None = None, **fields
        ) -> ml_collections.ConfigDict:
    """An MNIST sweep's cpu variant: :data:`CPU`, then ``fields``, at ``widths``."""
    c = variants.apply(c, {"name": c.name + "_cpu", **CPU, **fields})
    return variants.apply(c, {"sweep.width": widths}) if widths else c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = study(mnist_noise.get_config())
    c.name = "mnist_widths"
    c.sweep.width = (5, 10, 50, 100, 300, 500, 1000, 2000, 5000, 10_000)
    c.sweep.overrides += (("width>=2000", "prune.exclude", ()),)
    return variants.select(c, arg, smoke=smoke, cpu=lambda c: cpu(c, (5, 10, 50, 100, 300, 1000)))
