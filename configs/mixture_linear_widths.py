"""Width sweep on the linear Gaussian mixture (D=100, nu=0.5, 5% label noise): the study's
Figure 1 for the controlled setting (nu=0.5 here; ``mixture_linear.py`` runs nu=0.2, the setting
of the study's uncertainty analysis).

Two-layer ReLU FCN 100-P-2 without biases, P in {1, 3, 5, 8, 10, 15, 20, 25, 50, 100, 200, 500,
1000, 10000}; the study's setting (``mixture_linear.py``): 10 000 train / 5 000 test points,
Kaiming-uniform init, SGD lr 0.1, batch 1024, 1000 epochs a level, 5 replicates. Every width is
pruned until fewer than 20 weights would remain, past its best pruned model and its collapse.

Variants (``configs/mixture_linear_widths.py:ARG``):
  smoke: P in {5, 20}, 2 000 training points, 20 epochs, 3 levels, 2 replicates; seconds.
  cpu: 10 minutes on 2 CPU cores (measured; 8 with 2 local workers). It keeps the data, task
    and network, and reduces: P in {1, 3, 5, 10, 20, 50, 100, 200, 500, 1000} (no 10 000), 2
    replicates, 100 epochs of batch 128 (about the study's number of SGD steps, 8x less
    compute), 36% of the remaining weights pruned per level (two of the study's 20% levels in
    one), 20 000 fresh points.
"""

import ml_collections

from configs import mixture_linear, variants
from imp_jax.study.sweep import with_sweep

WIDTHS = (1, 3, 5, 8, 10, 15, 20, 25, 50, 100, 200, 500, 1000, 10_000)
CPU_WIDTHS = (1, 3, 5, 10, 20, 50, 100, 200, 500, 1000)
# A seconds-long version of a mixture sweep.
SMOKE = {"replicates": 2, "data.mixture_train": 2000, "train.epochs": 20, "imp.levels": 3,
         "eval.fresh_points": 10_000, "checkpoint.every_epochs": 10}
# The reductions of a mixture sweep's cpu variant (see the module docstring).
CPU = {"replicates": 2, "train.epochs": 100, "train.batch_size": 128, "prune.fraction": 0.36,
       "eval.fresh_points": 20_000, "checkpoint.every_epochs": 50}


def study(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The study's mixture sweep settings on a mixture config: 5 replicates, pruning every width
    until fewer than 20 weights would remain."""
    return variants.apply(with_sweep(c), {"replicates": 5, "imp.levels": 60,
                                          "imp.min_weights": 20})


def smoke(c: ml_collections.ConfigDict, **fields) -> ml_collections.ConfigDict:
    """A mixture sweep's smoke variant: :data:`SMOKE`, then ``fields``."""
    return variants.apply(c, {"name": c.name + "_smoke", **SMOKE, **fields})


def cpu(c: ml_collections.ConfigDict, **fields) -> ml_collections.ConfigDict:
    """A mixture sweep's cpu variant: :data:`CPU`, then ``fields``."""
    return variants.apply(c, {"name": c.name + "_cpu", **CPU, **fields})


def width_variants(c: ml_collections.ConfigDict, arg: str | None) -> ml_collections.ConfigDict:
    """A mixture width sweep as variant ``arg``: smoke at P in {5, 20}, cpu at CPU_WIDTHS."""
    return variants.select(c, arg, smoke=lambda c: smoke(c, **{"sweep.width": (5, 20)}),
                           cpu=lambda c: cpu(c, **{"sweep.width": CPU_WIDTHS}))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = study(mixture_linear.get_config())
    c.name = "mixture_linear_widths"
    c.data.mixture_nu = 0.5
    c.sweep.width = WIDTHS
    return width_variants(c, arg)
