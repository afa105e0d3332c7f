"""Width sweep of the three-layer FCN 784-P-100-10 on Fashion-MNIST with 20% label noise.

P in {500, 1000}, 320 epochs a level, otherwise as ``mnist3_widths.py`` (SGD lr 0.1, batch 128,
3 replicates, output layer kept dense, pruning until fewer than 100 prunable weights would
remain). The study gives no rewinding for Fashion-MNIST: every width resets to its initial
weights. Give ``--config.data.manual_dir`` or a tensorflow-datasets ``data_dir`` holding
``fashion_mnist`` on a machine that may not download.

Variants (``configs/fashion_widths.py:ARG``):
  smoke: as ``mnist_widths.py:smoke`` (P in {10, 50}).
  cpu: about 12 minutes on 2 CPU cores (estimated from MNIST level times): both widths, with
    5 000 training examples, 50 epochs, 2 replicates and 36% of the remaining weights pruned per
    level.
"""

import ml_collections

from configs import mnist_noise, variants
from configs import mnist_widths as widths


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = widths.study(mnist_noise.get_config())
    c.name = "fashion_widths"
    c.data.name = "fashion_mnist"
    c.model.hidden = (500, 100)
    c.train.epochs = 320
    c.sweep.width = (500, 1000)
    c.sweep.overrides = ()
    return variants.select(c, arg, smoke=widths.smoke,
                           cpu=lambda c: widths.cpu(c, **{"train.epochs": 50}))
