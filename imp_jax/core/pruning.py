"""The pruning rules a run can use, by the name ``config.prune.method`` gives them: a registry
over :mod:`imp_jax.masks`.

Magnitude pruning ranks the trained weights by ``|w|``; the random controls rank them by a
random key, so that they keep the same sparsity with other weights. Each rule works on one
replicate and is vmapped by the driver.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax

from imp_jax import masks

PyTree = Any


@dataclasses.dataclass(frozen=True)
class Method:
    """A pruning rule: the :mod:`imp_jax.masks` function, and whether it ranks by a random key
    rather than the weights."""

    fn: Callable[..., PyTree]
    random: bool

    def __call__(self, params: PyTree, mask: PyTree, key: jax.Array, *, fraction: float,
                 spec: masks.PrunableSpec, count: str) -> PyTree:
        """The new mask of one replicate (``key`` is used by the random controls only)."""
        return self.fn(key if self.random else params, mask, fraction, spec, count)


METHODS: dict[str, Method] = {
    "magnitude_global": Method(masks.prune_global, random=False),
    "magnitude_layerwise": Method(masks.prune_layerwise, random=False),
    "random_global": Method(masks.prune_random_global, random=True),
    "random_layerwise": Method(masks.prune_random_layerwise, random=True),
}
