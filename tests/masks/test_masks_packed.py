"""Tests of packed masks: masks.pack / masks.unpack, the mask functions given packed masks, and
wrap_optax(..., packed=True), which must train exactly as the unpacked optimizer does."""

import math

import chex
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import nnx, serialization
from hypothesis import given, settings

from imp_jax import masks
from tests.helpers import NNXModel, linen_state, linen_step, nnx_step

SETTINGS = settings(max_examples=12, deadline=None)

@st.composite
def mask_trees(draw):
    """Random masks of any shape (scalars, empty leaves and sizes not a multiple of 8 included),
    beside None and a non-array leaf, as a mask of an Equinox module would have."""
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    tree = {"none": None, "fn": jax.nn.relu}
    for i in range(draw(st.integers(1, 4))):
        shape = tuple(draw(st.lists(st.integers(0, 9), max_size=3)))
        tree[f"leaf{i}"] = jnp.asarray(rng.random(shape) < draw(st.floats(0, 1)))
    return tree


def _arrays(tree):
    return [x for x in jax.tree_util.tree_leaves(tree) if isinstance(x, jax.Array)]


@pytest.mark.slow
@given(mask_trees())
@SETTINGS
def test_round_trip_is_exact(mask):
    packed = masks.pack(mask)
    assert jax.tree_util.tree_structure(packed, is_leaf=masks.PackedLeaf.__instancecheck__) \
        == jax.tree_util.tree_structure(mask)
    assert packed["none"] is None and packed["fn"] is jax.nn.relu
    for name, m in mask.items():
        if isinstance(m, jax.Array):
            leaf = packed[name]
            assert isinstance(leaf, masks.PackedLeaf) and leaf.shape == m.shape
            assert leaf.bits.dtype == jnp.uint8 and leaf.bits.shape == (math.ceil(m.size / 8),)
    chex.assert_trees_all_equal(masks.unpack(packed), mask)
    assert all(x.dtype == jnp.bool_ for x in _arrays(masks.unpack(packed)))


def test_pack_and_unpack_leave_what_is_done_as_it_is():
    mask = {"w": jnp.ones((3, 5), bool), "b": None}
    assert masks.unpack(mask) is mask
    packed = masks.pack(mask)
    assert masks.pack(packed)["w"] is packed["w"]
    with pytest.raises(ValueError, match="mask leaf 'w' has dtype float32, expected bool"):
        masks.pack({"w": jnp.ones((3, 5))})


def test_memory_is_an_eighth():
    # LeNet-300-100's kernels and biases: one bit a weight, plus the padding of the last byte.
    rng = np.random.default_rng(0)
    shapes = [(784, 300), (300,), (300, 100), (100,), (100, 10), (10,)]
    mask = [jnp.asarray(rng.random(s) < 0.5) for s in shapes]
    packed = masks.pack(mask)
    bits = sum(leaf.bits.nbytes for leaf in packed)
    dense = sum(m.nbytes for m in mask)
    assert dense == 266_610
    assert bits == sum(math.ceil(math.prod(s) / 8) for s in shapes) == 33_328
    assert bits / dense < 0.12501


def test_jit():
    mask = {"a": jnp.arange(21).reshape(3, 7) % 3 == 0, "s": jnp.asarray(True)}
    packed = jax.jit(masks.pack)(mask)
    chex.assert_trees_all_equal(jax.jit(masks.unpack)(packed), mask)
    # A packed mask is a jit argument as any pytree: its shapes are static.
    params = {"a": jnp.ones((3, 7)), "s": jnp.float32(2)}
    applied = jax.jit(masks.apply_mask)(params, packed)
    chex.assert_trees_all_equal(applied, masks.apply_mask(params, mask))


def test_vmap_over_replicates():
    rng = np.random.default_rng(1)
    params = {"a": {"kernel": jnp.asarray(rng.normal(size=(3, 5, 7)), jnp.float32)},
              "b": {"kernel": jnp.asarray(rng.normal(size=(3, 7, 2)), jnp.float32)}}
    stacked = jax.vmap(lambda p: masks.prune_global(p, masks.ones_like(p), 0.4))(params)
    packed = jax.vmap(masks.pack)(stacked)
    assert packed["a"]["kernel"].bits.shape == (3, 5) and packed["a"]["kernel"].shape == (5, 7)
    chex.assert_trees_all_equal(jax.vmap(masks.unpack)(packed), stacked)
    chex.assert_trees_all_equal(masks.unpack(packed), stacked)  # leading axes kept in front
    again = jax.vmap(lambda p, m: masks.prune_global(p, m, 0.5))
    chex.assert_trees_all_equal(again(params, packed), again(params, stacked))


@pytest.mark.slow
def test_mask_functions_take_packed_masks():
    rng = np.random.default_rng(2)
    params = {"d": {"kernel": jnp.asarray(rng.normal(size=(9, 13)), jnp.float32),
                    "bias": jnp.zeros(13)},
              "o": {"kernel": jnp.asarray(rng.normal(size=(13, 3)), jnp.float32)}}
    mask = masks.prune_global(params, masks.ones_like(params), 0.3)
    other = masks.prune_random_global(jax.random.key(0), mask, 0.5)
    p, q = masks.pack(mask), masks.pack(other)
    masks.check_mask(params, p)
    chex.assert_trees_all_equal(masks.apply_mask(params, p), masks.apply_mask(params, mask))
    # min_ndim=1 counts the biases: a packed leaf must count its weights, not its bytes.
    spec = masks.PrunableSpec(min_ndim=1)
    assert masks.count(p, spec) == masks.count(mask, spec)
    assert str(masks.summary(p)) == str(masks.summary(mask))
    assert float(masks.overlap(p, q)) == float(masks.overlap(mask, other))
    chex.assert_trees_all_equal(masks.num_to_prune(p, 0.2), masks.num_to_prune(mask, 0.2))
    assert masks.layer_sparsities(p, 0.8) == masks.layer_sparsities(mask, 0.8)
    # Masks returned are unpacked.
    chex.assert_trees_all_equal(masks.prune_global(params, p, 0.2),
                                masks.prune_global(params, mask, 0.2))
    chex.assert_trees_all_equal(masks.prune_layerwise(params, p, 0.2),
                                masks.prune_layerwise(params, mask, 0.2))
    key = jax.random.key(3)
    chex.assert_trees_all_equal(masks.prune_random_layerwise(key, p, 0.2),
                                masks.prune_random_layerwise(key, mask, 0.2))
    chex.assert_trees_all_equal(masks.prune_to(params, p, 0.6, distribution="erk"),
                                masks.prune_to(params, mask, 0.6, distribution="erk"))
    with pytest.raises(ValueError, match="has shape"):
        masks.check_mask(params, masks.pack({**mask, "o": {"kernel": jnp.ones((3, 13), bool)}}))


def test_orbax_and_flax_serialization(tmp_path):
    mask = {"d": {"kernel": jnp.arange(35).reshape(5, 7) % 4 != 0, "bias": jnp.ones(7, bool)}}
    state = {"masks": masks.pack(mask), "step": jnp.int32(3)}
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(tmp_path / "ckpt", state)
    with ocp.StandardCheckpointer() as ckptr:
        restored = ckptr.restore(tmp_path / "ckpt", state)
    chex.assert_trees_all_equal(masks.unpack(restored["masks"]), mask)

    # flax.serialization needs the type registered, as its docstring says.
    serialization.register_serialization_state(
        masks.PackedLeaf, lambda x: {"bits": serialization.to_state_dict(x.bits)},
        lambda target, d: masks.PackedLeaf(
            serialization.from_state_dict(target.bits, d["bits"]), target.shape),
        override=True)
    data = serialization.to_bytes(state)
    restored = serialization.from_bytes(jax.tree_util.tree_map(jnp.zeros_like, state), data)
    chex.assert_trees_all_equal(masks.unpack(restored["masks"]), mask)


# -- wrap_optax(..., packed=True) ---------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("inner", ["momentum_and_decay", "adamw"])
def test_packed_trains_bitwise_as_unpacked(inner):
    def make_tx():
        if inner == "adamw":
            return optax.adamw(1e-2, weight_decay=1e-2)
        return optax.chain(optax.add_decayed_weights(1e-2), optax.sgd(0.1, momentum=0.9))

    params = linen_state(optax.sgd(0.1), hidden=13).params
    mask = masks.prune_global(params, masks.ones_like(params), 0.5)
    states = [linen_state(masks.wrap_optax(make_tx(), mask, packed=packed), hidden=13)
              for packed in (False, True)]
    states = [s.replace(params=masks.apply_mask(s.params, mask)) for s in states]
    for level in range(3):
        states = [linen_step(linen_step(linen_step(s))) for s in states]
        # Prune without masking the params: the next step lands the pruned weights on zero.
        mask = masks.prune_global(states[0].params, mask, 0.4)
        states = [s.replace(opt_state=masks.set_mask(s.opt_state, mask)) for s in states]
        if level == 1:  # set_mask takes a packed mask as well
            states[1] = states[1].replace(
                opt_state=masks.set_mask(states[1].opt_state, masks.pack(mask)))
    states = [linen_step(s) for s in states]
    unpacked, packed = states
    chex.assert_trees_all_equal(packed.params, unpacked.params)
    chex.assert_trees_all_equal(packed.opt_state.inner_state, unpacked.opt_state.inner_state)
    chex.assert_trees_all_equal(masks.get_mask(packed.opt_state), mask)
    chex.assert_trees_all_equal(masks.get_mask(unpacked.opt_state), mask)
    kernel = np.asarray(packed.params["layers_0"]["kernel"])
    assert np.all(kernel[~np.asarray(mask["layers_0"]["kernel"])] == 0)

    stored = sum(x.nbytes for x in jax.tree_util.tree_leaves(packed.opt_state.mask))
    dense = sum(x.nbytes for x in jax.tree_util.tree_leaves(unpacked.opt_state.mask))
    assert stored == (6 * 13 + 7) // 8 + 2 + (13 * 2 + 7) // 8 + 1 and dense == 6 * 13 + 13 + 26 + 2


def test_set_mask_on_a_packed_state(tmp_path):
    state = linen_state(masks.wrap_optax(optax.sgd(0.1, momentum=0.9), packed=True), hidden=13)
    mask = masks.get_mask(state.opt_state)
    assert all(bool(jnp.all(m)) for m in jax.tree_util.tree_leaves(mask))
    new = masks.prune_global(state.params, mask, 0.5)
    opt_state = jax.jit(masks.set_mask)(state.opt_state, new)
    assert all(x.dtype == jnp.uint8 for x in jax.tree_util.tree_leaves(opt_state.mask))
    chex.assert_trees_all_equal(masks.get_mask(opt_state), new)
    chex.assert_trees_all_equal(opt_state.inner_state, state.opt_state.inner_state)
    bad = {**new, "layers_2": {**new["layers_2"], "kernel": jnp.ones((2, 13), bool)}}
    with pytest.raises(ValueError, match="shape"):
        masks.set_mask(opt_state, bad)
    state = linen_step(state.replace(opt_state=opt_state))
    chex.assert_trees_all_equal(masks.get_mask(state.opt_state), new)

    # Orbax saves and restores the train state with its packed mask.
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(tmp_path / "ckpt", state)
    with ocp.StandardCheckpointer() as ckptr:
        restored = ckptr.restore(tmp_path / "ckpt", state)
    chex.assert_trees_all_equal(restored.opt_state, state.opt_state)
    chex.assert_trees_all_equal(masks.get_mask(restored.opt_state), new)


def test_masked_optimizer_takes_a_packed_mask():
    params = linen_state(optax.sgd(0.1), hidden=13).params
    mask = masks.prune_global(params, masks.ones_like(params), 0.5)
    opt = masks.masked_optimizer(optax.sgd(0.1, momentum=0.9))
    grads = jax.tree_util.tree_map(jnp.ones_like, params)
    chex.assert_trees_all_equal(opt.update(grads, opt.init(params), params, masks=mask),
                                opt.update(grads, opt.init(params), params,
                                           masks=masks.pack(mask)))


@pytest.mark.slow
def test_nnx_optimizer_packed_matches_unpacked():
    out = []
    for packed in (False, True):
        model = NNXModel(nnx.Rngs(0))
        params = nnx.state(model, nnx.Param)
        mask = masks.prune_to(params, masks.ones_like(params), 0.5)
        nnx.update(model, masks.apply_mask(params, mask))
        optimizer = nnx.Optimizer(model, masks.wrap_optax(optax.adamw(1e-2), mask, packed=packed),
                                  wrt=nnx.Param)
        for _ in range(3):
            nnx_step(model, optimizer)
        mask = masks.prune_to(nnx.state(model, nnx.Param), mask, 0.75)
        optimizer.opt_state = masks.set_mask(optimizer.opt_state, mask)
        for _ in range(3):
            nnx_step(model, optimizer)
        chex.assert_trees_all_equal(nnx.as_pure(masks.get_mask(optimizer.opt_state)),
                                    nnx.as_pure(mask))
        out.append(nnx.as_pure(nnx.state(model, nnx.Param)))
    chex.assert_trees_all_equal(*out)
