"""IMP's defining invariants, asserted on tiny runs' own saved states and rows.

Each run below trains a tiny Gaussian-mixture network with momentum and weight decay, and
every check reads what the run saved: its rewind point, each level's end state and every
checkpoint it wrote. A level's start is rebuilt from those (the saved rewind point under the
level's saved masks, a fresh optimizer state, the rewind step) and replayed to the level's
end, which must be the state the run saved: so a level that started anywhere else (the
previous level's weights, a kept momentum, another step) cannot pass.
"""

from __future__ import annotations

import math

import chex
import jax
import numpy as np
import pytest

from configs import mixture_linear
from tests import saved_runs
from tests.saved_runs import SavedRun, SaveSpy

pytestmark = pytest.mark.slow  # four tiny IMP runs, made by the module's fixtures

# The runs: rewinding to the initial weights (2 replicates, the exact count) and to step 3,
# mid-epoch (1 replicate, the reference code's count with the output layer kept dense); the
# two controls.
RUNS = {
    "rewind_0": {"replicates": 2},
    "rewind_3it": {"replicates": 1, "imp.rewind": "3it", "prune.count": "openlth",
                   "prune.exclude": ("^output/",)},
    "reinit": {"replicates": 2, "imp.reinit": True},
    "random": {"replicates": 2, "prune.method": "random_global"},
}
# Where the two rewinding runs rewind to, in steps.
REWIND_STEP = {"rewind_0": 0, "rewind_3it": 3}


def tiny_config(overrides: dict[str, object]):
    """The mixture smoke config shrunk to seconds: 8 steps an epoch, 3 epochs, 3 levels."""
    c = mixture_linear.get_config("smoke")
    for key, value in {
        "data.mixture_dim": 10, "data.mixture_train": 500, "data.mixture_test": 300,
        "model.hidden": (8,), "train.batch_size": 64, "train.epochs": 3,
        "train.momentum": 0.9, "train.weight_decay": 1e-3, "imp.levels": 3,
        "checkpoint.every_epochs": 1, "eval.fresh_points": 500, **overrides,
    }.items():
        section, field = key.split(".") if "." in key else (None, key)
        if section is None:
            c[field] = value
        else:
            c[section][field] = value
    return c


class Runs:
    """The runs of :data:`RUNS`, each made on first use (so that a test needing one waits for
    that one only), with every state it saved."""

    def __init__(self, base: pytest.TempPathFactory) -> None:
        self.base = base
        self.made: dict[str, tuple[SavedRun, SaveSpy]] = {}

    def __getitem__(self, name: str) -> tuple[SavedRun, SaveSpy]:
        if name not in self.made:
            spy = SaveSpy()
            run = saved_runs.run_in_process(tiny_config(RUNS[name]), self.base.mktemp(name), spy)
            self.made[name] = run, spy
        return self.made[name]

    def values(self) -> list[tuple[SavedRun, SaveSpy]]:
        return [self[name] for name in RUNS]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    return Runs(tmp_path_factory)


def assert_same_state(got, want, what: str) -> None:
    chex.assert_trees_all_close(got.params, want.params, atol=1e-6, rtol=1e-6,
                                custom_message=what)
    chex.assert_trees_all_close(got.opt_state, want.opt_state, atol=1e-6, rtol=1e-6,
                                custom_message=what)
    chex.assert_trees_all_equal(got.masks, want.masks, custom_message=what)
    np.testing.assert_array_equal(got.step, want.step, err_msg=what)
    np.testing.assert_array_equal(got.rng, want.rng, err_msg=what)


def pruned_removed(run: SavedRun, level: int, r: int) -> tuple[dict, dict]:
    """Kernels of replicate ``r``: the masks before and after pruning into ``level``."""
    before = saved_runs.kernels(saved_runs.replicate(run.levels[level - 1].masks, r))
    after = saved_runs.kernels(saved_runs.replicate(run.levels[level].masks, r))
    return before, after


def expected_removed(run: SavedRun, before: dict[str, np.ndarray]) -> int:
    """How many weights a level removes, by the configured rule, from the counts alone."""
    c = run.config.prune
    remaining = sum(int(m.sum()) for m in before.values())
    prunable = sum(int(m.sum()) for p, m in before.items() if saved_runs.prunable(run.config, p))
    if c.count == "openlth":  # ceil(f R) + 1, R every kernel weight left, excluded ones too
        return math.ceil(c.fraction * remaining) + 1
    return math.ceil(c.fraction * prunable)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(REWIND_STEP))
def test_every_level_starts_from_the_masked_rewind_point(runs, name):
    run, _ = runs[name]
    exp = run.exp
    assert len(run.levels) == 4
    assert exp.rewind_step == REWIND_STEP[name]
    assert np.all(run.rewind.step == REWIND_STEP[name])
    # The rewind point is level 0's state after rewind_step steps from the initialisation.
    initial = jax.device_get(exp.initial_state())
    point = (initial if exp.rewind_step == 0 else
             saved_runs.replay(exp, initial, steps=exp.rewind_step))
    assert_same_state(run.rewind, point, "the rewind point")
    if exp.rewind_step:  # momentum has built up by then: a rewind must not keep it
        assert any(np.any(x != 0) for x in jax.tree_util.tree_leaves(run.rewind.opt_state))
    for level in range(1, len(run.levels)):
        end = run.levels[level]
        # A fresh optimizer state is the zeros this builds.
        chex.assert_trees_all_equal(
            exp.trainer.optimizer.init(end.params),
            saved_runs.fresh_optimizer_state(exp.trainer.optimizer.init(end.params)))
        start = saved_runs.rewound(run.rewind, end.masks, end.opt_state)
        assert np.all(start.step == exp.rewind_step)
        assert_same_state(saved_runs.replay(exp, start), end, f"level {level}")
        assert np.all(end.step == exp.total_steps)


@pytest.mark.parametrize("name", list(RUNS))
def test_pruned_weights_are_exactly_zero_in_every_saved_state(runs, name):
    run, spy = runs[name]
    series = [s for s, _, _ in spy.saved]
    # The rewind point, a checkpoint after each epoch but the last, every level's end.
    assert series.count("rewind") == 1 and series.count("levels") == 4
    assert series.count("progress") == 4 * 2
    for where, meta, state in [*spy.saved, *(("levels", {"level": i}, s)
                                             for i, s in enumerate(run.levels))]:
        params = dict(saved_runs.leaves_with_paths(state.params))
        # The momentum trace has the params' structure: pruned entries must stay 0 there too.
        traces = [dict(saved_runs.leaves_with_paths(t.trace))
                  for t in jax.tree_util.tree_leaves(
                      state.opt_state, is_leaf=lambda x: hasattr(x, "trace"))
                  if hasattr(t, "trace")]
        assert traces, "no momentum trace in the optimizer state"
        for path, mask in saved_runs.leaves_with_paths(state.masks):
            assert np.all(params[path][~mask] == 0), (where, meta, path)
            for trace in traces:
                assert np.all(trace[path][~mask] == 0), (where, meta, path, "momentum")


@pytest.mark.parametrize("name", list(RUNS))
def test_masks_nest_and_each_level_removes_the_configured_count(runs, name):
    run, _ = runs[name]
    c = run.config
    for level in range(1, len(run.levels)):
        for r in range(c.replicates):
            before, after = pruned_removed(run, level, r)
            removed = sum(int((b & ~after[p]).sum()) for p, b in before.items())
            assert all(np.all(after[p] <= b) for p, b in before.items()), "not a subset"
            assert removed == expected_removed(run, before), (level, r)
            for p, m in after.items():
                if not saved_runs.prunable(c, p):
                    assert m.all(), f"excluded {p} was pruned"
            # Biases (and any leaf that is not a kernel) are never pruned.
            for p, m in saved_runs.leaves_with_paths(
                    saved_runs.replicate(run.levels[level].masks, r)):
                assert np.ndim(m) >= 2 or m.all(), p
            row = run.row(level, r)
            assert row["remaining_weights"] == sum(int(m.sum()) for m in after.values())


@pytest.mark.parametrize("name", ["rewind_0", "rewind_3it", "reinit"])
def test_magnitude_pruning_removes_the_globally_smallest_trained_weights(runs, name):
    run, _ = runs[name]
    for level in range(1, len(run.levels)):
        for r in range(run.config.replicates):
            before, after = pruned_removed(run, level, r)
            trained = saved_runs.kernels(saved_runs.replicate(run.levels[level - 1].params, r))
            gone = np.concatenate([np.abs(trained[p][b & ~after[p]]) for p, b in before.items()
                                   if saved_runs.prunable(run.config, p)])
            kept = np.concatenate([np.abs(trained[p][after[p]]) for p in before
                                   if saved_runs.prunable(run.config, p)])
            # Ranked across layers on raw magnitudes: every removed weight is at most any kept.
            assert gone.max() <= kept.min(), (level, r)


def test_reinit_control_trains_the_tickets_masks_from_a_fresh_initialisation(runs):
    run, _ = runs["reinit"]
    exp = run.exp
    keys = exp.replicate_keys()
    for level in range(1, len(run.levels)):
        end = run.levels[level]
        # The control's documented seeding: replicate r's key folded with the level.
        fresh = jax.device_get(exp.initial_state(
            jax.vmap(lambda k, level=level: jax.random.fold_in(k, level))(keys)))
        for a, b in zip(jax.tree_util.tree_leaves(fresh.params),
                        jax.tree_util.tree_leaves(run.rewind.params), strict=True):
            assert not np.allclose(a, b), "the control restarted from the ticket's init"
        start = saved_runs.rewound(fresh, end.masks, end.opt_state)
        assert np.all(start.step == 0)
        assert_same_state(saved_runs.replay(exp, start), end, f"reinit level {level}")


def test_random_pruning_control_ignores_the_weights_magnitudes(runs):
    run, _ = runs["random"]
    for level in range(1, len(run.levels)):
        masks = []
        for r in range(run.config.replicates):
            before, after = pruned_removed(run, level, r)
            trained = saved_runs.kernels(saved_runs.replicate(run.levels[level - 1].params, r))
            magnitudes = np.concatenate([np.abs(trained[p][b]) for p, b in before.items()])
            was_removed = np.concatenate([~after[p][b] for p, b in before.items()])
            n = int(was_removed.sum())
            smallest = np.zeros_like(was_removed)
            smallest[np.argsort(magnitudes, kind="stable")[:n]] = True
            # By magnitude all n would be among the n smallest; at random about 20% are.
            assert (was_removed & smallest).sum() < 0.6 * n, (level, r)
            assert magnitudes[was_removed].max() > np.median(magnitudes[~was_removed])
            masks.append(np.concatenate([m.ravel() for m in after.values()]))
        assert not np.array_equal(*masks), "replicates drew the same random mask"


def test_the_rows_hold_one_replicate_per_level_and_the_saved_counts(runs):
    for run, _ in runs.values():
        assert sorted((r["level"], r["replicate"]) for r in run.rows) == [
            (lv, r) for lv in range(len(run.levels)) for r in range(run.config.replicates)]
        for row in run.rows:
            want = saved_runs.weight_counts(
                run.config, saved_runs.replicate(run.levels[row["level"]].masks,
                                                 row["replicate"]))
            assert {k: row[k] for k in want} == pytest.approx(want)

