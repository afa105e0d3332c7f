"""Flax (Linen) models of the study.

Layer names are stable and readable (``hidden_0``, ``output``) so that exclusion patterns such as
``r"^output/"`` select the layers a user means.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

# Kaiming (He) initialisations, and PyTorch's default for nn.Linear (kaiming_uniform with
# a=sqrt(5), i.e. U(+-1/sqrt(fan_in))), which much reference code silently used.
INITS = {
    "kaiming_normal": nn.initializers.variance_scaling(2.0, "fan_in", "normal"),
    "kaiming_uniform": nn.initializers.variance_scaling(2.0, "fan_in", "uniform"),
    "torch_default": nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform"),
}
MODELS = ("fcn",)


class FCN(nn.Module):
    """Fully connected ReLU network: flatten, ``hidden`` widths, then ``num_classes`` logits.

    ``FCN((300,), 10)`` is the study's two-layer 784-300-10 network, ``FCN((P, 100), 10)`` its
    three-layer one, and ``FCN((P,), 2, use_bias=False, initializer="kaiming_uniform")`` its
    Gaussian-mixture network.
    """

    hidden: Sequence[int]
    num_classes: int
    use_bias: bool = True
    initializer: str = "kaiming_normal"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train  # no dropout or normalisation
        kernel_init = INITS[self.initializer]
        x = x.reshape(x.shape[0], -1).astype(jnp.float32)
        for i, width in enumerate(self.hidden):
            x = nn.relu(nn.Dense(width, use_bias=self.use_bias, kernel_init=kernel_init,
                                 name=f"hidden_{i}")(x))
        return nn.Dense(self.num_classes, use_bias=self.use_bias, kernel_init=kernel_init,
                        name="output")(x)


def make_model(name: str, num_classes: int, *, hidden: Sequence[int] = (), use_bias: bool = True,
               init: str = "kaiming_normal") -> nn.Module:
    """Builds a model by name (one of :data:`MODELS`)."""
    if name not in MODELS:
        raise ValueError(f"model.name: unknown model {name!r}; expected one of {MODELS}")
    if init not in INITS:
        raise ValueError(f"model.init: unknown initialisation {init!r}; expected one of "
                         f"{tuple(INITS)}")
    return FCN(tuple(hidden), num_classes, use_bias=use_bias, initializer=init)
