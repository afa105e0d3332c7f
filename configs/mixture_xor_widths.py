"""Width sweep on the XOR Gaussian mixture (D=100, nu=1.0, 25% label noise): the study's
Figure 1 for the harder controlled task (nu=1.0 here; ``mixture_xor.py`` runs nu=0.6).

The network, widths and training of ``mixture_linear_widths.py`` (the study's setting: P in {1,
..., 10000}, 1000 epochs of batch 1024, lr 0.1, 5 replicates) on the task of ``mixture_xor.py``.

Variants (``configs/mixture_xor_widths.py:ARG``): ``smoke`` and ``cpu``, with the reductions of
``mixture_linear_widths.py`` (cpu: P up to 1000, 2 replicates, 100 epochs of batch 128, 36% of
the weights pruned per level, 20 000 fresh points; about 16 minutes on 2 CPU cores, as the
linear one).
"""

import ml_collections

from configs import mixture_linear_widths as widths
from configs import mixture_xor


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = widths.study(mixture_xor.get_config())
    c.name = "mixture_xor_widths"
    c.data.mixture_nu = 1.0
    c.sweep.width = widths.WIDTHS
    return widths.width_variants(c, arg)
