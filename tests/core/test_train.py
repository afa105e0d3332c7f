"""Tests of imp_jax.core.train: the train step, the replicate-batched training loop and
evaluation."""

import dataclasses
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imp_jax import masks
from imp_jax.core import models, train

N, D = 100, 6


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(N, D)), jnp.float32)
    y = jnp.asarray((np.asarray(x[:, 0]) > 0).astype(np.int32))
    return x, y


def make_trainer(replicate_batching="vmap", **hyper):
    model = models.make_model("fcn", 2, hidden=(16,))
    return train.Trainer(model, train.Hyper(**{"batch_size": 32, "lr": 0.1, **hyper}), N,
                         replicate_batching=replicate_batching)


def stacked(y, replicates, n=N):
    return jnp.broadcast_to(y, (replicates, n))


def order(tr, state, epoch):
    return tr.epoch_order(np.asarray(state.rng), epoch)


def test_training_reduces_loss_and_error(problem):
    x, y = problem
    tr = make_trainer(momentum=0.9)
    state = tr.init(jax.random.split(jax.random.key(0), 2), x)
    before = tr.predict(state.params, state.masks, state.model_state, x)
    for epoch in range(30):
        state, stats = tr.run_steps(state, x, stacked(y, 2), order(tr, state, epoch), 0,
                                    tr.steps_per_epoch)
    after = tr.predict(state.params, state.masks, state.model_state, x)
    assert after.shape == (2, N, 2)
    err = lambda logits: float(jnp.mean(jnp.argmax(logits, -1) != y))  # noqa: E731
    assert err(after[0]) < 0.1 < err(before[0]) + 0.1
    assert int(state.step[0]) == 30 * 4  # 100 examples, batch 32: 3 full batches + 1 of 4
    assert np.all(np.asarray(stats["loss"]) < 0.5)
    assert np.all(np.asarray(stats["first_nonfinite_step"]) == -1)


def test_split_epoch_equals_whole_epoch(problem):
    x, y = problem
    tr = make_trainer(momentum=0.9, weight_decay=1e-3)
    keys = jax.random.split(jax.random.key(1), 2)
    epoch3 = order(tr, tr.init(keys, x), 3)
    whole, _ = tr.run_steps(tr.init(keys, x), x, stacked(y, 2), epoch3, 0, 4)
    part, _ = tr.run_steps(tr.init(keys, x), x, stacked(y, 2), epoch3, 0, 1)
    part, _ = tr.run_steps(part, x, stacked(y, 2), epoch3, 1, 4)
    chex.assert_trees_all_equal(whole, part)


def test_epoch_order_is_a_permutation_per_replicate_and_epoch(problem):
    x, _ = problem
    tr = make_trainer()
    rng = np.asarray(tr.init(jax.random.split(jax.random.key(6), 2), x).rng)
    a, b = tr.epoch_order(rng, 0), tr.epoch_order(rng, 1)
    assert a.shape == (2, N) and a.dtype == np.int32
    assert all(sorted(row) == list(range(N)) for row in (*a, *b))
    assert not np.array_equal(a[0], a[1]) and not np.array_equal(a[0], b[0])
    np.testing.assert_array_equal(a, tr.epoch_order(rng, 0))


@pytest.mark.slow
@pytest.mark.parametrize("batching", train.REPLICATE_BATCHING)
def test_replicates_match_single_runs(problem, batching):
    x, y = problem
    tr = make_trainer(batching)
    keys = jax.random.split(jax.random.key(2), 3)
    init = tr.init(keys, x)
    both, _ = tr.run_steps(init, x, stacked(y, 3), order(tr, init, 0), 0, 4)
    for r in range(3):
        single = tr.init(keys[r:r + 1], x)
        one, _ = tr.run_steps(single, x, stacked(y, 1), order(tr, single, 0), 0, 4)
        chex.assert_trees_all_close(jax.tree_util.tree_map(lambda a, r=r: a[r], both),
                                    jax.tree_util.tree_map(lambda a: a[0], one), atol=1e-6)
    # Different keys: different initialisations.
    assert not np.allclose(both.params["hidden_0"]["kernel"][0],
                           both.params["hidden_0"]["kernel"][1])


@pytest.mark.slow
def test_replicate_batchings_agree(problem):
    """vmap, unroll and map compute the same steps, and report per-replicate stats alike."""
    x, y = problem
    keys = jax.random.split(jax.random.key(8), 3)
    out = {}
    for batching in train.REPLICATE_BATCHING:
        tr = make_trainer(batching, momentum=0.9, weight_decay=1e-3)
        state = tr.init(keys, x)
        state, stats = tr.run_steps(state, x, stacked(y, 3), order(tr, state, 0), 1, 4)
        assert stats["loss"].shape == stats["first_nonfinite_step"].shape == (3,)
        out[batching] = state, stats
    for batching in ("unroll", "map"):
        chex.assert_trees_all_close(out[batching], out["vmap"], atol=1e-6)


def test_choose_replicate_batching():
    small = models.make_model("fcn", 2, hidden=(10,), use_bias=False)
    wide = models.make_model("fcn", 2, hidden=(1000,), use_bias=False)
    # 1024 x 10 activations fit in a core's cache; 1024 x 1000 (4 MB) do not.
    assert train.choose_replicate_batching(small, (100,), 1024, "cpu") == "unroll"
    assert train.choose_replicate_batching(wide, (100,), 1024, "cpu") == "map"
    assert train.choose_replicate_batching(wide, (100,), 1024, "gpu") == "vmap"
    # A thousand copies of the step would take minutes to compile: one after another instead.
    assert train.choose_replicate_batching(small, (100,), 1024, "cpu", replicates=16) == "unroll"
    assert train.choose_replicate_batching(small, (100,), 1024, "cpu", replicates=1000) == "map"
    with pytest.raises(ValueError, match="replicate_batching must be one of"):
        make_trainer("scan")


def test_pruned_weights_stay_zero_with_momentum_and_decay(problem):
    x, y = problem
    tr = make_trainer(momentum=0.9, nesterov=True, weight_decay=1e-2)
    state = tr.init(jax.random.split(jax.random.key(3), 1), x)
    one = jax.tree_util.tree_map(lambda a: a[0], state)
    mask = masks.prune_global(one.params, one.masks, 0.7)
    state = jax.vmap(tr.rewind, in_axes=(0, None))(state, mask)
    for epoch in range(5):
        state, _ = tr.run_steps(state, x, stacked(y, 1), order(tr, state, epoch), 0,
                                tr.steps_per_epoch)
    kernel = np.asarray(state.params["hidden_0"]["kernel"][0])
    keep = np.asarray(mask["hidden_0"]["kernel"])
    assert np.all(kernel[~keep] == 0.0) and np.all(kernel[keep] != 0.0)


def test_rewind_resets_optimizer_state_and_keeps_step(problem):
    x, y = problem
    tr = make_trainer(momentum=0.9)
    state = tr.init(jax.random.split(jax.random.key(4), 1), x)
    state, _ = tr.run_steps(state, x, stacked(y, 1), order(tr, state, 0), 0, 4)
    rewound = jax.vmap(tr.rewind)(state, state.masks)
    trace = rewound.opt_state[1].trace
    assert all(float(jnp.abs(t).max()) == 0.0 for t in jax.tree_util.tree_leaves(trace))
    assert int(rewound.step[0]) == 4


def test_learning_rate_schedule():
    tr = make_trainer(lr_boundaries=(10, 20), lr_decay=0.1)
    np.testing.assert_allclose([float(tr.learning_rate(s)) for s in (0, 9, 10, 19, 20, 99)],
                               [0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-6)


def test_last_partial_batch_is_weighted(problem):
    """A run over just the 4-example last batch moves the weights, as a full batch would."""
    x, y = problem
    tr = make_trainer()
    state = tr.init(jax.random.split(jax.random.key(5), 1), x)
    before = np.asarray(state.params["output"]["kernel"])  # the state is donated below
    after, stats = tr.run_steps(state, x, stacked(y, 1), order(tr, state, 0), 3, 4)
    assert np.isfinite(np.asarray(stats["loss"])).all()
    assert not np.allclose(after.params["output"]["kernel"], before)


def test_first_nonfinite_step_is_reported(problem):
    x, y = problem
    tr = make_trainer(lr=1e30)  # diverges within a few steps
    state = tr.init(jax.random.split(jax.random.key(7), 1), x)
    state, stats = tr.run_steps(state, x, stacked(y, 1), order(tr, state, 0), 0, 4)
    # Step 0 starts from the finite initialisation; its huge update breaks the next steps.
    assert int(np.asarray(stats["first_nonfinite_step"])[0]) == 1
    assert not np.isfinite(np.asarray(stats["loss"])).any()


@pytest.mark.parametrize("batching", train.REPLICATE_BATCHING)
def test_run_steps_is_a_loop_of_train_step(problem, batching):
    """The compiled loop is train_step on each minibatch, replicate by replicate."""
    x, y = problem
    tr = make_trainer(batching, momentum=0.9, weight_decay=1e-3)
    keys = jax.random.split(jax.random.key(9), 2)
    init = tr.init(keys, x)
    epoch = order(tr, init, 0)
    got, stats = tr.run_steps(tr.init(keys, x), x, stacked(y, 2), epoch, 1, 4)
    step = jax.jit(functools.partial(train.train_step, trainer=tr))
    for r in range(2):
        state, losses = jax.tree_util.tree_map(lambda a, r=r: a[r], init), []
        for i in range(1, 4):
            state, metrics = step(state, train.minibatch(x, y, jnp.asarray(epoch[r]), i, 32))
            losses.append(float(metrics["loss"]))
        chex.assert_trees_all_close(jax.tree_util.tree_map(lambda a, r=r: a[r], got), state,
                                    atol=1e-6)
        assert float(stats["loss"][r]) == pytest.approx(np.mean(losses), rel=1e-6)


def test_minibatch_pads_the_last_batch_at_zero_weight():
    x, y = jnp.arange(10.0)[:, None], jnp.arange(10)
    order = jnp.asarray([9, 8, 7, 6, 5, 4, 3, 2, 1, 0])
    batch = train.minibatch(x, y, order, 2, 4)  # examples 8, 9 of the order, then 0, 1 again
    np.testing.assert_array_equal(batch.y, [1, 0, 9, 8])
    np.testing.assert_array_equal(batch.x[:, 0], [1.0, 0.0, 9.0, 8.0])
    np.testing.assert_array_equal(batch.real, [1.0, 1.0, 0.0, 0.0])


def test_predict_in_batches_equals_one_apply(problem):
    x, _ = problem
    tr = dataclasses.replace(make_trainer(), eval_batch_size=30)  # 3 batches and 10 left
    state = tr.init(jax.random.split(jax.random.key(10), 2), x)
    logits = tr.predict(state.params, state.masks, state.model_state, x)
    for r in range(2):
        expected = tr.model.apply({"params": jax.tree_util.tree_map(lambda a, r=r: a[r],
                                                                    state.params)}, x)
        np.testing.assert_allclose(logits[r], expected, rtol=1e-6, atol=1e-6)


# What the trainer gave before its step was rewritten as train_step and its wrappers (the same
# for every replicate_batching, to float rounding): two epochs of two replicates, each
# replicate's mean loss of the second, the sum of the output kernels and of |logits|.
PREVIOUS = {"fcn": ([1.0865057, 1.2160237], 9.758451, 600.8088),
            "resnet": ([1.0310486, 0.9802559], 6.019968, 96.77948)}


@pytest.mark.parametrize("name", ["fcn", pytest.param("resnet", marks=pytest.mark.slow)])
def test_results_match_the_previous_trainer(name):
    """A small FCN, and a ResNet with BatchNorm and a padded last batch, as before."""
    rng = np.random.default_rng(0)
    if name == "fcn":
        model, shape, n, b = models.make_model("fcn", 3, hidden=(16,)), (6,), 100, 32
    else:
        model, shape, n = models.make_model("resnet", 3, width=2, blocks_per_stage=1), (8, 8, 1), 20
        b = 8
    x = jnp.asarray(rng.normal(size=(n, *shape)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 3, size=n).astype(np.int32))
    loss, kernel_sum, logit_sum = PREVIOUS[name]
    for batching in train.REPLICATE_BATCHING if name == "fcn" else ("vmap",):
        tr = train.Trainer(model, train.Hyper(batch_size=b, lr=0.1, momentum=0.9,
                                              weight_decay=1e-3), n, replicate_batching=batching)
        state = tr.init(jax.random.split(jax.random.key(3), 2), x)
        for epoch in range(2):
            state, stats = tr.run_steps(state, x, stacked(y, 2, n), order(tr, state, epoch), 0,
                                        tr.steps_per_epoch)
        logits = tr.predict(state.params, state.masks, state.model_state, x)
        np.testing.assert_allclose(stats["loss"], loss, rtol=1e-5)
        assert float(jnp.sum(state.params["output"]["kernel"])) == pytest.approx(kernel_sum,
                                                                                  rel=1e-5)
        assert float(jnp.sum(jnp.abs(logits))) == pytest.approx(logit_sum, rel=1e-5)
