"""nu sweep on the linear Gaussian mixture (D=100, 5% label noise): the effective number of
parameters against task difficulty (smaller nu: closer classes, a harder task).

nu in {0.1, 0.2, ..., 1.0} with the network and training of ``mixture_linear.py`` (width P=500,
1000 epochs of batch 1024, lr 0.1) and the study's 5 replicates; every run is pruned until fewer
than 20 weights would remain. ``mixture_xor_nu.py`` is the XOR counterpart: report on both sweep
directories together to get linear and XOR on one plot.

Variants (``configs/mixture_nu.py:ARG``):
  smoke: nu in {0.3, 1.0}, P=20, 2 000 training points, 20 epochs, 3 levels, 2 replicates.
  cpu: about 15 minutes on 2 CPU cores (estimated from the width sweep's P=200 point): every nu,
    P=200, and the reductions of ``mixture_linear_widths.py:cpu`` (2 replicates, 100 epochs of
    batch 128, 36% of the weights pruned per level, 20 000 fresh points).
"""

import ml_collections

from configs import mixture_linear, variants
from configs import mixture_linear_widths as widths

NUS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def variant(c: ml_collections.ConfigDict, arg: str | None,
            smoke_nus: tuple[float, ...]) -> ml_collections.ConfigDict:
    """A nu sweep's ``smoke`` or ``cpu`` variant (``arg``) of the study's sweep ``c``."""
    return variants.select(
        c, arg, smoke=lambda c: widths.smoke(c, **{"model.hidden": (20,), "sweep.nu": smoke_nus}),
        cpu=lambda c: widths.cpu(c, **{"model.hidden": (200,)}))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = widths.study(mixture_linear.get_config())
    c.name = "mixture_linear_nu"
    c.sweep.nu = NUS
    return variant(c, arg, (0.3, 1.0))
