"""masks.wrap_optax as a drop-in in other projects' training loops: flax linen's TrainState,
flax NNX's Optimizer, Equinox, and a plain pytree loop. In each, pruned weights stay exactly
zero under momentum and weight decay, set_mask keeps the inner optimizer's state, and the
weights pruned by a new mask land on zero at the next step."""

import importlib.util

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from imp_jax import masks
from tests.helpers import NNXModel, X, Y, linen_state, linen_step, nnx_step


def _momentum_and_decay() -> optax.GradientTransformation:
    return optax.chain(optax.add_decayed_weights(1e-2), optax.sgd(0.1, momentum=0.9))


def _assert_pruned_zero(params, mask) -> None:
    """Every pruned weight is exactly 0 and some kept kernel weight is not."""
    kept_nonzero = False
    for p, m in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(mask),
                    strict=True):
        p, m = np.asarray(p), np.asarray(m)
        assert np.all(p[~m] == 0.0)
        kept_nonzero |= p.ndim >= 2 and bool(np.any(p[m] != 0.0))
    assert kept_nonzero


def _trace(opt_state):
    """The momentum buffer inside a wrapped chain(add_decayed_weights, sgd(momentum))."""
    return opt_state.inner_state[1][0].trace


# -- flax linen TrainState ----------------------------------------------------------------------


def test_linen_train_state():
    dense = linen_state(optax.sgd(0.1))
    mask = masks.prune_global(dense.params, masks.ones_like(dense.params), 0.5)
    state = linen_state(masks.wrap_optax(_momentum_and_decay(), mask))
    state = state.replace(params=masks.apply_mask(state.params, mask))
    for _ in range(5):
        state = linen_step(state)
    _assert_pruned_zero(state.params, mask)
    chex.assert_trees_all_equal(masks.get_mask(state.opt_state), mask)

    # Prune further and swap the mask in, without masking the params: the step lands the newly
    # pruned weights on zero, and momentum is carried over, not reset.
    new = masks.prune_global(state.params, mask, 0.5)
    opt_state = masks.set_mask(state.opt_state, new)
    chex.assert_trees_all_equal(_trace(opt_state), _trace(state.opt_state))
    state = linen_step(state.replace(opt_state=opt_state))
    _assert_pruned_zero(state.params, new)
    assert masks.summary(new).remaining == 128 - 64 - 32


@pytest.mark.slow
def test_wrap_optax_matches_masked_optimizer_bitwise():
    """Given masked params, wrap_optax computes what the driver's masked_optimizer does."""
    state = linen_state(optax.sgd(0.1))
    mask = masks.prune_global(state.params, masks.ones_like(state.params), 0.7)
    params = masks.apply_mask(state.params, mask)
    wrapped, driver = masks.wrap_optax(_momentum_and_decay(), mask), \
        masks.masked_optimizer(_momentum_and_decay())

    def loss(p):
        return optax.softmax_cross_entropy_with_integer_labels(
            state.apply_fn({"params": p}, X), Y).mean()

    # Op by op: one compiled program holding both could fuse their arithmetic differently.
    p, q, s, t = params, params, wrapped.init(params), driver.init(params)
    with jax.disable_jit():
        for _ in range(3):
            u, s = wrapped.update(jax.grad(loss)(p), s, p)
            v, t = driver.update(jax.grad(loss)(q), t, q, masks=mask)
            p, q = optax.apply_updates(p, u), optax.apply_updates(q, v)
    chex.assert_trees_all_equal(p, q)
    chex.assert_trees_all_equal(s.inner_state, t)


# -- flax NNX ----------------------------------------------------------------------------------


def test_nnx_optimizer():
    model = NNXModel(nnx.Rngs(0))
    params = nnx.state(model, nnx.Param)
    mask = masks.prune_to(params, masks.ones_like(params), 0.5)
    nnx.update(model, masks.apply_mask(params, mask))
    optimizer = nnx.Optimizer(model, masks.wrap_optax(_momentum_and_decay(), mask),
                              wrt=nnx.Param)
    for _ in range(5):
        nnx_step(model, optimizer)
    _assert_pruned_zero(nnx.state(model, nnx.Param), mask)

    new = masks.prune_to(nnx.state(model, nnx.Param), mask, 0.75)
    before = nnx.as_pure(_trace(optimizer.opt_state))
    optimizer.opt_state = masks.set_mask(optimizer.opt_state, new)
    chex.assert_trees_all_equal(nnx.as_pure(_trace(optimizer.opt_state)), before)
    chex.assert_trees_all_equal(nnx.as_pure(masks.get_mask(optimizer.opt_state)),
                                nnx.as_pure(new))
    nnx_step(model, optimizer)
    _assert_pruned_zero(nnx.state(model, nnx.Param), new)
    assert masks.summary(new).remaining == 128 - 96


# -- Equinox -----------------------------------------------------------------------------------


@pytest.mark.skipif(importlib.util.find_spec("equinox") is None,
                    reason="equinox is not installed: pip install -e '.[test]' brings it")
@pytest.mark.slow
def test_equinox_loop():
    import equinox as eqx

    model = eqx.nn.MLP(6, 2, 16, 1, key=jax.random.key(0))
    # The module itself goes in: its activation functions are passed through.
    mask = masks.prune_to(model, masks.ones_like(model), 0.5)
    assert mask.activation is None
    model = masks.apply_mask(model, mask)
    tx = masks.wrap_optax(_momentum_and_decay(), mask)
    opt_state = tx.init(eqx.filter(model, eqx.is_array))

    @eqx.filter_jit
    def step(model, opt_state):
        def loss(model):
            logits = jax.vmap(model)(X)
            return optax.softmax_cross_entropy_with_integer_labels(logits, Y).mean()

        grads = eqx.filter_grad(loss)(model)
        updates, opt_state = tx.update(grads, opt_state, eqx.filter(model, eqx.is_array))
        return eqx.apply_updates(model, updates), opt_state

    for _ in range(5):
        model, opt_state = step(model, opt_state)
    _assert_pruned_zero(eqx.filter(model, eqx.is_array), mask)

    new = masks.prune_global(model, mask, 0.5)
    opt_state = masks.set_mask(opt_state, new)
    model, opt_state = step(model, opt_state)
    _assert_pruned_zero(eqx.filter(model, eqx.is_array), new)
    assert masks.summary(new).remaining == 128 - 64 - 32


# -- a plain pytree ----------------------------------------------------------------------------


def _plain_params():
    return {"w1": jax.random.normal(jax.random.key(0), (6, 16)), "b1": jnp.zeros(16),
            "w2": jax.random.normal(jax.random.key(1), (16, 2))}


def _plain_loss(p):
    logits = jax.nn.relu(X @ p["w1"] + p["b1"]) @ p["w2"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, Y).mean()


def test_plain_pytree_with_adamw_inside_a_chain():
    params = _plain_params()
    tx = optax.chain(optax.clip_by_global_norm(1.0),
                     masks.wrap_optax(optax.adamw(1e-2, weight_decay=1e-1)))  # all-true at init
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state):
        updates, opt_state = tx.update(jax.grad(_plain_loss)(params), opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    for _ in range(3):
        params, opt_state = step(params, opt_state)
    mask = masks.prune_to(params, masks.get_mask(opt_state), 0.8)
    counts = opt_state[1].inner_state[0].count
    opt_state = masks.set_mask(opt_state, mask)
    assert int(opt_state[1].inner_state[0].count) == int(counts) == 3  # Adam's state carries on
    for _ in range(3):
        params, opt_state = step(params, opt_state)
        _assert_pruned_zero(params, mask)
    assert bool(jnp.any(params["b1"] != 0))  # biases are never pruned


def test_without_params_pruned_weights_stay_where_they_are():
    params = _plain_params()
    mask = masks.prune_to(params, masks.ones_like(params), 0.5)
    tx = masks.wrap_optax(optax.sgd(0.1, momentum=0.9), mask)
    state = tx.init(params)
    updates, _ = tx.update(jax.grad(_plain_loss)(params), state)  # sgd needs no params
    for u, m in zip(jax.tree_util.tree_leaves(updates), jax.tree_util.tree_leaves(mask),
                    strict=True):
        assert np.all(np.asarray(u)[~np.asarray(m)] == 0.0)
