"""nu sweep on the XOR Gaussian mixture (D=100, 25% label noise): the effective number of
parameters against task difficulty, to compare with the linear task (``mixture_nu.py``).

nu in {0.6, 0.7, ..., 1.3} with the network and training of ``mixture_xor.py`` (width P=500,
1000 epochs of batch 1024, lr 0.1) and the study's 5 replicates; every run is pruned until fewer
than 20 weights would remain.

Variants (``configs/mixture_xor_nu.py:ARG``): ``smoke`` (nu in {0.6, 1.3}) and ``cpu`` (every
nu, P=200; about 12 minutes on 2 CPU cores), with the reductions of ``mixture_nu.py``.
"""

import ml_collections

from configs import mixture_linear_widths as widths
from configs import mixture_nu, mixture_xor

NUS = (0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = widths.study(mixture_xor.get_config())
    c.name = "mixture_xor_nu"
    c.sweep.nu = NUS
    return mixture_nu.variant(c, arg, (0.6, 1.3))
