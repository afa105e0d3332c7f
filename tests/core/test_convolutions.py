"""Tests of imp_jax.core.convolutions: the same results, in the form XLA:CPU runs fast."""

import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from imp_jax.core.convolutions import native_convolutions

RNG = np.random.default_rng(0)
X = jnp.asarray(RNG.normal(size=(8, 12, 12, 4)), jnp.float32)
KERNEL = jnp.asarray(RNG.normal(size=(3, 3, 4, 8)), jnp.float32)


def grads(x, kernel, stride=1, dilation=1, groups=1, numbers=("NHWC", "HWIO", "NHWC")):
    """Input and kernel gradients of a loss through one convolution (and a nested jit)."""
    if numbers[0] == "NCHW":
        x = jnp.transpose(x, (0, 3, 1, 2))

    def loss(x, kernel):
        y = lax.conv_general_dilated(x, kernel, (stride, stride), ((1, 1), (1, 1)),
                                     rhs_dilation=(dilation, dilation), dimension_numbers=numbers,
                                     feature_group_count=groups)
        return jax.jit(jnp.sum)(jnp.sin(y))

    return jax.grad(loss, argnums=(0, 1))(x, kernel)


@pytest.mark.parametrize("kw", [{}, {"stride": 2}, {"dilation": 2}, {"groups": 2},
                                {"numbers": ("NCHW", "HWIO", "NHWC")}])
def test_same_results_as_plain_convolutions(kw):
    kernel = KERNEL[:, :, :2] if kw.get("groups") else KERNEL
    expected = jax.jit(lambda x, k: grads(x, k, **kw))(X, kernel)
    chex.assert_trees_all_close(jax.jit(native_convolutions(lambda x, k: grads(x, k, **kw)))(
        X, kernel), expected, atol=1e-4, rtol=1e-5)


def test_vmap_gives_one_convolution_per_replicate():
    kernels = jnp.stack([KERNEL, -2 * KERNEL, KERNEL ** 2])
    expected = jax.jit(jax.vmap(lambda k: grads(X, k, stride=2)))(kernels)
    native = jax.jit(jax.vmap(native_convolutions(lambda k: grads(X, k, stride=2))))
    chex.assert_trees_all_close(native(kernels), expected, atol=1e-4, rtol=1e-5)
    hlo = native.lower(kernels).compile().as_text()
    convolutions = re.findall(r" convolution\(.*", hlo)
    assert len(convolutions) == 3 * 3  # forward, input and kernel gradients of each replicate
    assert not any("feature_group_count" in c or "batch_group_count" in c for c in convolutions)


def test_backward_convolutions_in_a_loop_body_are_native():
    """The cause of slow CNN training on a CPU: XLA's own rewrite skips loop bodies."""

    def loop(step):
        return jax.jit(lambda x, k: lax.fori_loop(0, 2, lambda i, c: step(*c), (x, k)))

    def labels(step):
        hlo = loop(step).lower(X, KERNEL).compile().as_text()
        return set(re.findall(r" convolution\(.*dim_labels=(\S+?),", hlo))

    assert labels(grads) != {"b01f_01io->b01f"}
    assert labels(native_convolutions(grads)) == {"b01f_01io->b01f"}
