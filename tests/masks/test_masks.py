"""Tests of imp_jax.masks: pure mask utilities over arbitrary pytrees."""

import math

import chex
import flax.linen as nn
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from hypothesis import given, settings

from imp_jax import masks

SETTINGS = settings(max_examples=12, deadline=None)


@st.composite
def param_trees(draw):
    """Random nested dicts of kernels (2-4 dims) and biases, with random values."""
    n_layers = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    tree = {}
    for i in range(n_layers):
        ndim = draw(st.integers(2, 4))
        shape = tuple(draw(st.lists(st.integers(1, 4), min_size=ndim, max_size=ndim)))
        tree[f"layer{i}"] = {"kernel": jnp.asarray(rng.normal(size=shape), jnp.float32),
                             "bias": jnp.asarray(rng.normal(size=shape[-1:]), jnp.float32)}
    return tree


def _flat_kernels(tree):
    return np.concatenate([np.asarray(v["kernel"]).ravel() for v in tree.values()])


@pytest.mark.slow
@given(param_trees(), st.sampled_from([0.0, 0.1, 0.2, 0.5, 0.9]), st.integers(1, 5))
@SETTINGS
def test_counts_follow_ceil_rule_and_pruned_stays_pruned(params, fraction, rounds):
    mask = masks.ones_like(params)
    expected = masks.count(mask)["total"]
    for _ in range(rounds):
        new = masks.prune_global(params, mask, fraction)
        expected -= math.ceil(fraction * expected)
        assert int(masks.count(new)["remaining"]) == expected
        # Monotone: nothing pruned comes back.
        for old, cur in zip(jax.tree_util.tree_leaves(mask), jax.tree_util.tree_leaves(new),
                            strict=True):
            assert not np.any(np.asarray(cur) & ~np.asarray(old))
        mask = new
    # Biases are never pruned.
    for layer in mask.values():
        assert np.all(np.asarray(layer["bias"]))


@pytest.mark.slow
@given(param_trees(), st.sampled_from([0.2, 0.5, 0.8]))
@SETTINGS
def test_global_pruning_removes_smallest_magnitudes_across_layers(params, fraction):
    mask = masks.prune_global(params, masks.ones_like(params), fraction)
    w = np.abs(_flat_kernels(params))
    kept = np.concatenate([np.asarray(v["kernel"]).ravel() for v in mask.values()])
    if (~kept).any() and kept.any():
        assert w[~kept].max() <= w[kept].min()
    assert (~kept).sum() == math.ceil(fraction * w.size)


def test_global_ranking_uses_raw_magnitudes_not_per_layer():
    params = {"small": {"kernel": jnp.full((4, 4), 0.01)},
              "large": {"kernel": jnp.arange(1.0, 17.0).reshape(4, 4)}}
    mask = masks.prune_global(params, masks.ones_like(params), 0.5)
    assert not np.asarray(mask["small"]["kernel"]).any()
    assert np.asarray(mask["large"]["kernel"]).all()


def test_exact_count_with_ties_and_zeros():
    params = {"a": {"kernel": jnp.ones((10, 10))}, "b": {"kernel": jnp.zeros((3, 3))}}
    mask = masks.prune_global(params, masks.ones_like(params), 0.25)
    assert int(masks.count(mask)["remaining"]) == 109 - math.ceil(0.25 * 109)
    assert not np.asarray(mask["b"]["kernel"]).any()  # zeros go first


def test_fraction_is_exact_for_decimal_fractions():
    # 0.2 * 45200 must give 9040 (float32 arithmetic would risk 9041).
    params = {"a": {"kernel": jnp.asarray(np.random.default_rng(0).normal(size=(452, 100)))}}
    mask = masks.prune_global(params, masks.ones_like(params), 0.2)
    assert int(masks.count(mask)["remaining"]) == 45200 - 9040


@given(param_trees(), st.sampled_from([0.2, 0.5]))
@settings(max_examples=6, deadline=None)
@pytest.mark.slow
def test_jit_and_vmap_match_eager(params, fraction):
    mask = masks.ones_like(params)
    eager = masks.prune_global(params, mask, fraction)
    jitted = jax.jit(masks.prune_global, static_argnums=(2, 3))(params, mask, fraction,
                                                                 masks.DEFAULT_SPEC)
    chex.assert_trees_all_equal(eager, jitted)
    stacked_p = jax.tree_util.tree_map(lambda x: jnp.stack([x, -2 * x, x[::-1]]), params)
    stacked_m = jax.tree_util.tree_map(lambda x: jnp.stack([x] * 3), mask)
    batched = jax.vmap(lambda p, m: masks.prune_global(p, m, fraction))(stacked_p, stacked_m)
    for i in range(3):
        one = jax.tree_util.tree_map(lambda x, i=i: x[i], stacked_p)
        chex.assert_trees_all_equal(jax.tree_util.tree_map(lambda x, i=i: x[i], batched),
                                    masks.prune_global(one, mask, fraction))


def test_vmap_with_ties_matches_eager():
    params = {"a": {"kernel": jnp.stack([jnp.ones((4, 5)), jnp.arange(20.0).reshape(4, 5)])}}
    mask = {"a": {"kernel": jnp.ones((2, 4, 5), bool)}}
    batched = jax.vmap(lambda p, m: masks.prune_global(p, m, 0.3))(params, mask)
    for i in range(2):
        one = jax.tree_util.tree_map(lambda x, i=i: x[i], params)
        expected = masks.prune_global(one, masks.ones_like(one), 0.3)
        chex.assert_trees_all_equal(batched["a"]["kernel"][i], expected["a"]["kernel"])


@pytest.mark.slow
@given(param_trees(), st.sampled_from([0.2, 0.5]))
@SETTINGS
def test_layerwise_prunes_same_fraction_per_layer(params, fraction):
    mask = masks.prune_layerwise(params, masks.ones_like(params), fraction)
    for name, layer in mask.items():
        w = np.abs(np.asarray(params[name]["kernel"])).ravel()
        kept = np.asarray(layer["kernel"]).ravel()
        assert (~kept).sum() == math.ceil(fraction * w.size)
        if (~kept).any() and kept.any():
            assert w[~kept].max() <= w[kept].min()


@pytest.mark.slow
def test_random_pruning_counts_and_key_dependence():
    params = {"a": {"kernel": jnp.ones((20, 30))}, "b": {"kernel": jnp.ones((30, 10))}}
    mask = masks.ones_like(params)
    m1 = masks.prune_random_global(jax.random.key(0), mask, 0.2)
    m2 = masks.prune_random_global(jax.random.key(1), mask, 0.2)
    assert int(masks.count(m1)["remaining"]) == 900 - 180
    assert not all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(m1),
                                                        jax.tree_util.tree_leaves(m2), strict=True))
    m3 = masks.prune_random_layerwise(jax.random.key(0), m1, 0.5)
    per = masks.count(m3)["per_leaf"]
    r1 = masks.count(m1)["per_leaf"]
    for path, (remaining, _) in per.items():
        assert int(remaining) == int(r1[path][0]) - math.ceil(0.5 * int(r1[path][0]))
    assert not np.any(np.asarray(m3["a"]["kernel"]) & ~np.asarray(m1["a"]["kernel"]))


def test_count_per_leaf_and_sparsity():
    params = {"d0": {"kernel": jnp.ones((784, 50)), "bias": jnp.ones(50)},
              "d1": {"kernel": jnp.ones((50, 100))}, "d2": {"kernel": jnp.ones((100, 10))}}
    c = masks.count(masks.ones_like(params))
    assert c["total"] == 45_200  # the study's count for 784-50-100-10
    assert float(c["sparsity"]) == 0.0
    assert c["per_leaf"]["d0/kernel"][1] == 784 * 50
    spec = masks.PrunableSpec(exclude=(r"^d2/",))
    assert masks.count(masks.ones_like(params), spec)["total"] == 45_200 - 1000


def test_exclusion_by_path_keeps_layer_dense():
    rng = np.random.default_rng(1)
    params = {"d0": {"kernel": jnp.asarray(rng.normal(size=(8, 8)))},
              "d1": {"kernel": jnp.asarray(1e-3 * rng.normal(size=(8, 2)))}}
    spec = masks.PrunableSpec(exclude=(r"^d1/",))
    mask = masks.prune_global(params, masks.ones_like(params), 0.5, spec)
    assert np.asarray(mask["d1"]["kernel"]).all()
    assert int(np.asarray(mask["d0"]["kernel"]).sum()) == 32
    assert spec.paths(params) == ["d0/kernel"]


def test_overlap():
    a = {"w": jnp.array([[True, True, False, False]])}
    b = {"w": jnp.array([[True, False, True, False]])}
    assert float(masks.overlap(a, a)) == 1.0
    np.testing.assert_allclose(float(masks.overlap(a, b)), 1 / 3)


def test_apply_mask_zeros_exactly_and_keeps_dtype():
    params = {"w": jnp.ones((2, 3), jnp.bfloat16), "b": jnp.ones(3)}
    mask = {"w": jnp.array([[True, False, True], [False, True, True]]), "b": jnp.ones(3, bool)}
    out = masks.apply_mask(params, mask)
    assert out["w"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(out["w"], np.float32),
                                  np.asarray(mask["w"], np.float32))


@pytest.mark.parametrize("inner", [optax.sgd(0.1, momentum=0.9),
                                   optax.adamw(1e-2, weight_decay=1e-2),
                                   optax.chain(optax.add_decayed_weights(1e-4),
                                               optax.sgd(0.1, momentum=0.9, nesterov=True))])
def test_masked_optimizer_never_revives_pruned_weights(inner):
    rng = np.random.default_rng(0)
    params = {"k": jnp.asarray(rng.normal(size=(6, 5)), jnp.float32), "b": jnp.zeros(5)}
    mask = masks.prune_global(params, masks.ones_like(params), 0.5)
    params = masks.apply_mask(params, mask)
    opt = masks.masked_optimizer(inner)
    state = opt.init(params)
    x = jnp.asarray(rng.normal(size=(16, 6)), jnp.float32)

    @jax.jit
    def step(params, state):
        grads = jax.grad(lambda p: jnp.sum((x @ p["k"] + p["b"]) ** 2))(params)
        updates, state = opt.update(grads, state, params, masks=mask)
        return optax.apply_updates(params, updates), state

    for _ in range(200):
        params, state = step(params, state)
    pruned = ~np.asarray(mask["k"])
    assert np.all(np.asarray(params["k"])[pruned] == 0.0)
    assert np.any(np.asarray(params["k"])[~pruned] != 0.0)


def test_masked_optimizer_requires_mask():
    opt = masks.masked_optimizer(optax.sgd(0.1))
    params = {"k": jnp.ones((2, 2))}
    with pytest.raises(ValueError, match="masks="):
        opt.update(params, opt.init(params), params)


def test_works_on_flax_params():
    model = nn.Sequential([nn.Dense(16), nn.relu, nn.Dense(3)])
    params = model.init(jax.random.key(0), jnp.ones((1, 8)))["params"]
    spec = masks.PrunableSpec(exclude=(r"layers_2/",))
    assert spec.paths(params) == ["layers_0/kernel"]
    mask = masks.prune_global(params, masks.ones_like(params), 0.2, spec)
    assert int(masks.count(mask, spec)["remaining"]) == 128 - math.ceil(0.2 * 128)
    out = model.apply({"params": masks.apply_mask(params, mask)}, jnp.ones((2, 8)))
    assert out.shape == (2, 3)


def test_orbax_roundtrip_of_state_with_masks(tmp_path):
    params = {"d": {"kernel": jnp.arange(12.0).reshape(3, 4), "bias": jnp.ones(4)}}
    mask = masks.prune_global(params, masks.ones_like(params), 0.5)
    state = {"params": params, "masks": mask, "step": jnp.int32(7)}
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(tmp_path / "ckpt", state)
    with ocp.StandardCheckpointer() as ckptr:
        restored = ckptr.restore(tmp_path / "ckpt", state)
    chex.assert_trees_all_equal(restored, state)
    assert restored["masks"]["d"]["kernel"].dtype == jnp.bool_


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5, float("nan")])
def test_bad_fraction(fraction):
    params = {"w": jnp.ones((3, 3))}
    with pytest.raises(ValueError, match=r"fraction must be a number in \[0, 1\)"):
        masks.prune_global(params, masks.ones_like(params), fraction)


def test_mismatched_mask():
    params = {"w": jnp.ones((3, 3))}
    with pytest.raises(ValueError, match="tree structure"):
        masks.prune_global(params, {"v": jnp.ones((3, 3), bool)}, 0.2)
    with pytest.raises(ValueError, match=r"shape \(3, 2\), expected the param's shape \(3, 3\)"):
        masks.apply_mask(params, {"w": jnp.ones((3, 2), bool)})
    with pytest.raises(ValueError, match="expected bool"):
        masks.apply_mask(params, {"w": jnp.ones((3, 3))})


def test_exclusion_matching_nothing_and_nothing_prunable():
    params = {"d0": {"kernel": jnp.ones((3, 3)), "bias": jnp.ones(3)}}
    with pytest.raises(ValueError, match="matches no prunable leaf"):
        masks.prune_global(params, masks.ones_like(params), 0.2, masks.PrunableSpec(("bias",)))
    with pytest.raises(ValueError, match="nothing to prune"):
        masks.prune_global({"b": jnp.ones(3)}, {"b": jnp.ones(3, bool)}, 0.2)
    with pytest.raises(ValueError, match="sequence of patterns"):
        masks.PrunableSpec(exclude="d0")


# -- the reference code's count (count="openlth") ----------------------------------------------


def _fcn_784_300_10(seed=0):
    rng = np.random.default_rng(seed)
    return {"hidden_0": {"kernel": jnp.asarray(rng.normal(size=(784, 300)), jnp.float32),
                         "bias": jnp.zeros(300)},
            "output": {"kernel": jnp.asarray(rng.normal(size=(300, 10)), jnp.float32),
                       "bias": jnp.zeros(10)}}


@pytest.mark.parametrize("exclude", [(), ("^output/",)], ids=["all", "output_kept"])
def test_openlth_count_follows_the_reference_recurrence(exclude):
    """784-300-10: every level goes from R to R - ceil(0.2 R) - 1 kernel weights, R counting the
    excluded output layer too (computed here independently, in integers)."""
    params = _fcn_784_300_10()
    spec = masks.PrunableSpec(exclude=exclude)
    mask = masks.ones_like(params)
    expected = [238_200]
    for _ in range(8):
        expected.append(expected[-1] - (expected[-1] + 4) // 5 - 1)  # ceil(R / 5) in integers
    got = []
    for _ in range(len(expected)):
        got.append(int(masks.count(mask, masks.PrunableSpec())["remaining"]))
        mask = masks.prune_global(params, mask, 0.2, spec, count="openlth")
    assert got == expected
    assert got[:4] == [238_200, 190_559, 152_446, 121_955]
    if exclude:
        assert bool(jnp.all(mask["output"]["kernel"]))


def test_openlth_count_is_exact_with_ties_and_matches_the_reference_threshold():
    # The reference keeps |w| > sorted(|w|)[n - 1]: n + 1 removed without ties.
    params = {"a": {"kernel": jnp.asarray(np.arange(1.0, 21.0).reshape(4, 5))}}
    mask = masks.prune_global(params, masks.ones_like(params), 0.2, count="openlth")
    assert int(jnp.sum(~mask["a"]["kernel"])) == math.ceil(0.2 * 20) + 1
    assert not bool(jnp.any(mask["a"]["kernel"].ravel()[:5]))
    tied = {"a": {"kernel": jnp.ones((4, 5))}}
    mask = masks.prune_global(tied, masks.ones_like(tied), 0.2, count="openlth")
    assert int(jnp.sum(~mask["a"]["kernel"])) == 5


def test_openlth_count_in_jit_vmap_and_the_controls():
    params = _fcn_784_300_10()
    spec = masks.PrunableSpec(exclude=("^output/",))
    mask = masks.ones_like(params)
    n, prunable = jax.jit(lambda m: masks.num_to_prune(m, 0.2, spec, "openlth"))(mask)
    assert (int(n), int(prunable)) == (47_641, 235_200)
    stacked = jax.tree_util.tree_map(lambda x: jnp.stack([x, x]), params)
    stacked_mask = masks.ones_like(stacked)
    batched = jax.jit(jax.vmap(lambda p, m: masks.prune_global(p, m, 0.2, spec, "openlth")))(
        stacked, stacked_mask)
    assert [int(jnp.sum(batched["hidden_0"]["kernel"][r])) for r in range(2)] == [187_559] * 2
    random = masks.prune_random_global(jax.random.key(0), mask, 0.2, spec, count="openlth")
    assert int(jnp.sum(random["hidden_0"]["kernel"])) == 187_559
    layer = masks.prune_layerwise(params, mask, 0.2, count="openlth")
    assert int(jnp.sum(~layer["output"]["kernel"])) == 600 + 1
    assert int(masks.num_to_prune(mask, 0.2, count="openlth", layerwise=True)[0]) == (
        47_040 + 1 + 600 + 1)


def test_openlth_count_refuses_more_than_remains():
    params = {"hidden": {"kernel": jnp.ones((10, 10))}, "output": {"kernel": jnp.ones((10, 90))}}
    spec = masks.PrunableSpec(exclude=("^output/",))
    mask = masks.ones_like(params)
    # R = 1000 (900 of them excluded): ceil(200) + 1 = 201 > the 100 prunable ones.
    assert tuple(map(int, masks.num_to_prune(mask, 0.2, spec, "openlth"))) == (201, 100)
    with pytest.raises(ValueError, match=r"cannot prune 201 weights .* only 100 remain"):
        masks.prune_global(params, mask, 0.2, spec, count="openlth")
    with pytest.raises(ValueError, match="count must be one of"):
        masks.prune_global(params, mask, 0.2, spec, count="round")


# -- count and summary -------------------------------------------------------------------------


def _two_layers():
    return {"a": {"kernel": jnp.arange(12.0).reshape(3, 4), "bias": jnp.zeros(4)},
            "b": {"kernel": jnp.full((4, 2), 100.0)}}


def test_count_gives_plain_numbers_and_scalars_under_jit():
    params = _two_layers()
    mask = masks.prune_global(params, masks.ones_like(params), 0.25)
    c = masks.count(mask)
    assert c == {"remaining": 15, "total": 20, "sparsity": 0.25,
                 "per_leaf": {"a/kernel": (7, 12), "b/kernel": (8, 8)}}
    assert {type(c["remaining"]), type(c["total"]), *map(type, c["per_leaf"]["a/kernel"])} == {int}
    traced = jax.jit(lambda m: masks.count(m))(mask)
    assert int(traced["remaining"]) == 15 and float(traced["sparsity"]) == 0.25


def test_summary_table():
    params = _two_layers()
    s = masks.summary(masks.prune_global(params, masks.ones_like(params), 0.25))
    assert (s.remaining, s.total, s.sparsity) == (15, 20, 0.25)
    assert [(c.path, c.remaining, c.total) for c in s.leaves] == [("a/kernel", 7, 12),
                                                                  ("b/kernel", 8, 8)]
    assert str(s) == "\n".join([
        "leaf      remaining  total  sparsity",
        "a/kernel          7     12    41.67%",
        "b/kernel          8      8     0.00%",
        "------------------------------------",
        "total            15     20    25.00%"])
    with pytest.raises(TypeError, match="concrete mask"):
        jax.jit(lambda m: masks.summary(m).remaining)(masks.ones_like(params))


# -- leaves that are not arrays ----------------------------------------------------------------


def test_non_array_leaves_are_passed_through():
    params = {"d": {"kernel": jnp.arange(1.0, 13.0).reshape(3, 4), "bias": jnp.ones(4)},
              "act": jax.nn.relu, "name": "mlp", "rate": 0.5}
    mask = masks.ones_like(params)
    assert mask["act"] is None and mask["name"] is None and mask["rate"] is None
    pruned = masks.prune_global(params, mask, 0.5)
    chex.assert_trees_all_equal(pruned, masks.prune_to(params, mask, 0.5))
    out = masks.apply_mask(params, pruned)
    assert out["act"] is jax.nn.relu and out["name"] == "mlp" and out["rate"] == 0.5
    np.testing.assert_array_equal(out["d"]["kernel"].ravel()[:6], 0.0)
    assert masks.count(pruned)["remaining"] == 6
    with pytest.raises(ValueError, match=r"mask leaf 'act' must be None"):
        masks.check_mask(params, {**mask, "act": True})
    with pytest.raises(ValueError, match=r"mask leaf 'd/bias' is NoneType, expected a bool"):
        masks.check_mask(params, {**mask, "d": {"kernel": mask["d"]["kernel"], "bias": None}})


# -- pruning to a target sparsity --------------------------------------------------------------


@pytest.mark.slow
@given(param_trees(), st.sampled_from([0.0, 0.3, 0.5, 0.9]))
@settings(max_examples=6, deadline=None)
def test_prune_to_from_dense_is_prune_global(params, sparsity):
    ones = masks.ones_like(params)
    chex.assert_trees_all_equal(masks.prune_to(params, ones, sparsity),
                                masks.prune_global(params, ones, sparsity))


def test_prune_to_reaches_the_target_and_masks_only_shrink():
    rng = np.random.default_rng(3)
    params = {"a": {"kernel": jnp.asarray(rng.normal(size=(20, 10)), jnp.float32)},
              "b": {"kernel": jnp.asarray(rng.normal(size=(10, 5)), jnp.float32)}}
    first = masks.prune_global(params, masks.ones_like(params), 0.2)
    mask = masks.prune_to(params, first, 0.6)
    assert masks.count(mask)["remaining"] == 250 - 150
    for old, new in zip(jax.tree_util.tree_leaves(first), jax.tree_util.tree_leaves(mask),
                        strict=True):
        assert not np.any(np.asarray(new) & ~np.asarray(old))
    chex.assert_trees_all_equal(
        jax.jit(lambda p, m: masks.prune_to(p, m, 0.6))(params, first), mask)
    chex.assert_trees_all_equal(masks.prune_to(params, mask, 0.6), mask)  # already there
    with pytest.raises(ValueError, match=r"already has 150 weights pruned .* target's 75"):
        masks.prune_to(params, mask, 0.3)
    # Under a trace the mask is left as it is.
    chex.assert_trees_all_equal(jax.jit(lambda p, m: masks.prune_to(p, m, 0.3))(params, mask),
                                mask)


def test_prune_to_uniform_and_per_leaf_targets():
    rng = np.random.default_rng(4)
    params = {"a": {"kernel": jnp.asarray(rng.normal(size=(7, 9)), jnp.float32)},
              "b": {"kernel": jnp.asarray(rng.normal(size=(9, 3)), jnp.float32)},
              "c": {"kernel": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32),
                    "bias": jnp.ones(2)}}
    ones = masks.ones_like(params)
    uniform = masks.prune_to(params, ones, 0.5, distribution="uniform")
    for name, n in (("a", 63), ("b", 27), ("c", 6)):
        kept = np.asarray(uniform[name]["kernel"])
        assert (~kept).sum() == math.ceil(0.5 * n)
        w = np.abs(np.asarray(params[name]["kernel"]))
        assert w[~kept].max() <= w[kept].min()  # ranked within the leaf
    assert masks.layer_sparsities(params, 0.5, "uniform") == {  # pruned / weights
        "a/kernel": 32 / 63, "b/kernel": 14 / 27, "c/kernel": 3 / 6}

    per_leaf = masks.prune_to(params, ones, {"a/kernel": 0.9, "c/kernel": 0.5})
    assert {p: r for p, (r, _) in masks.count(per_leaf)["per_leaf"].items()} == {
        "a/kernel": 63 - 57, "b/kernel": 27, "c/kernel": 3}
    with pytest.raises(ValueError, match=r"not prunable: \['c/bias'\]"):
        masks.prune_to(params, ones, {"c/bias": 0.5})
    with pytest.raises(ValueError, match=r"not prunable: \['c/kernel'\]"):
        masks.prune_to(params, ones, {"c/kernel": 0.5}, masks.PrunableSpec(exclude=("^c/",)))
    with pytest.raises(ValueError, match=r"sparsity\['a/kernel'\] must be a number in \[0, 1\)"):
        masks.prune_to(params, ones, {"a/kernel": 1.0})
    with pytest.raises(ValueError, match="leave distribution out"):
        masks.prune_to(params, ones, {"a/kernel": 0.5}, distribution="erk")
    with pytest.raises(ValueError, match="distribution must be one of"):
        masks.prune_to(params, ones, 0.5, distribution="random")


def _rigl_erk(shapes, keep, power=1.0):
    """Per-layer densities as RigL computes them (its loop, written out independently), for
    ``keep`` weights kept in all."""
    sizes = [int(np.prod(s)) for s in shapes]
    raw = [(sum(s) / n) ** power for s, n in zip(shapes, sizes, strict=True)]
    dense = set()
    while True:
        rhs = keep - sum(n for i, n in enumerate(sizes) if i in dense)
        eps = rhs / sum(raw[i] * n for i, n in enumerate(sizes) if i not in dense)
        top = max(raw[i] for i in range(len(sizes)) if i not in dense)
        if eps * top <= 1:
            return [1.0 if i in dense else eps * raw[i] for i in range(len(sizes))]
        dense |= {i for i in range(len(sizes)) if raw[i] == top}


@pytest.mark.slow
@pytest.mark.parametrize("sparsity,power", [(0.9, 1.0), (0.5, 1.0), (0.8, 0.5), (0.7, 0.0)])
def test_erk_follows_rigl_and_hits_the_global_target(sparsity, power):
    shapes = [(3, 3, 3, 8), (3, 3, 8, 16), (2, 2), (144, 10)]  # (2, 2) ends up dense at 0.5
    params = {f"l{i}": {"kernel": jax.random.normal(jax.random.key(i), s)}
              for i, s in enumerate(shapes)}
    mask = masks.prune_to(params, masks.ones_like(params), sparsity, distribution="erk",
                          erk_power_scale=power)
    kept = [int(np.asarray(mask[f"l{i}"]["kernel"]).sum()) for i in range(len(shapes))]
    sizes = [int(np.prod(s)) for s in shapes]
    assert sum(kept) == sum(sizes) - math.ceil(sparsity * sum(sizes))
    for k, n, density in zip(kept, sizes, _rigl_erk(shapes, sum(kept), power), strict=True):
        assert abs(k - density * n) < 1
    shares = masks.layer_sparsities(params, sparsity, "erk", erk_power_scale=power)
    assert list(shares) == [f"l{i}/kernel" for i in range(len(shapes))]
    assert list(shares.values()) == [(n - k) / n for k, n in zip(kept, sizes, strict=True)]
    if sparsity == 0.5:
        assert kept[2] == 4


@pytest.mark.slow
def test_prune_to_vmaps_over_replicates():
    params = {"a": {"kernel": jax.random.normal(jax.random.key(0), (3, 8, 6))},
              "b": {"kernel": jax.random.normal(jax.random.key(1), (3, 6, 2))}}
    mask = masks.ones_like(params)
    batched = jax.vmap(lambda p, m: masks.prune_to(p, m, 0.5, distribution="erk"))(params, mask)
    for r in range(3):
        one = jax.tree_util.tree_map(lambda x, r=r: x[r], params)
        chex.assert_trees_all_equal(
            jax.tree_util.tree_map(lambda x, r=r: x[r], batched),
            masks.prune_to(one, masks.ones_like(one), 0.5, distribution="erk"))


# -- wrap_optax: its state, set_mask, get_mask -------------------------------------------------


def test_set_mask_and_get_mask_find_the_state_and_check_the_mask():
    params = _two_layers()
    mask = masks.prune_global(params, masks.ones_like(params), 0.5)
    tx = optax.chain(optax.clip(1.0), masks.wrap_optax(optax.sgd(0.1, momentum=0.9)))
    state = tx.init(params)
    chex.assert_trees_all_equal(masks.get_mask(state), masks.ones_like(params))
    state = jax.jit(masks.set_mask)(state, mask)
    assert isinstance(state[1], masks.MaskedOptState)
    chex.assert_trees_all_equal(masks.get_mask(state), mask)
    with pytest.raises(ValueError, match=r"holds no masks\.wrap_optax state"):
        masks.set_mask(optax.sgd(0.1).init(params), mask)
    with pytest.raises(ValueError, match=r"mask leaf 'b/kernel' has shape \(2, 4\)"):
        masks.set_mask(state, {**mask, "b": {"kernel": jnp.ones((2, 4), bool)}})
    with pytest.raises(ValueError, match="expected bool"):
        masks.set_mask(state, jax.tree_util.tree_map(lambda m: m.astype(jnp.float32), mask))
    with pytest.raises(ValueError, match="shape"):
        masks.wrap_optax(optax.sgd(0.1), {**mask, "b": {"kernel": jnp.ones(8, bool)}}).init(params)
    two = optax.chain(masks.wrap_optax(optax.sgd(0.1)), masks.wrap_optax(optax.sgd(0.1)))
    both = masks.set_mask(two.init(params), mask)
    for s in both:
        chex.assert_trees_all_equal(s.mask, mask)
    with pytest.raises(ValueError, match="holds 2"):
        masks.get_mask(both)


def test_public_names_and_typed_options():
    import typing

    assert sorted(masks.__all__) == sorted(set(masks.__all__))
    for name in masks.__all__:
        assert hasattr(masks, name), name
    assert masks.COUNTS == ("exact", "openlth")
    assert masks.DISTRIBUTIONS == ("global", "uniform", "erk")
    assert typing.get_type_hints(masks.prune_global)["count"] == masks.Count
    assert typing.get_type_hints(masks.prune_to)["distribution"] == masks.Distribution
