"""Width sweep of the three-layer FCN 784-P-100-10 on MNIST with 20% label noise.

P in {3, 5, 10, 25, 50, 100, 300, 500, 1000, 5000, 10000} (the first hidden layer; the second
keeps 100 units) with the training of ``mnist_widths.py``: 120 epochs a level, 3 replicates,
output layer (1 000 weights here) kept dense at every width as in the reference code's default,
rewinding from P >= 1000, pruning until fewer than 100 prunable weights
would remain.

Variants (``configs/mnist3_widths.py:ARG``):
  smoke: P in {10, 50}, as ``mnist_widths.py:smoke``.
  cpu: about 19 minutes on 2 CPU cores (estimated from measured level times): P in {3, 10, 25,
    100, 300, 1000} and the reductions of ``mnist_widths.py:cpu`` (5 000 training examples, 60
    epochs, 2 replicates, 36% pruned per level).
"""

import ml_collections

from configs import mnist_noise, variants
from configs import mnist_widths as widths


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = widths.study(mnist_noise.get_config())
    c.name = "mnist3_widths"
    c.model.hidden = (300, 100)
    c.sweep.width = (3, 5, 10, 25, 50, 100, 300, 500, 1000, 5000, 10_000)
    return variants.select(c, arg, smoke=widths.smoke,
                           cpu=lambda c: widths.cpu(c, (3, 10, 25, 100, 300, 1000)))
