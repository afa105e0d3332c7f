"""The convolutional configs end to end: CIFAR-10 on tensorflow-datasets' mock data (CIFAR is
not on disk here), with BatchNorm, uint8 images augmented on device, and rewinding."""

import json

import chex
import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import cifar10_noise
from imp_jax.run import driver


@pytest.mark.slow
def test_cifar10_smoke_on_mock_data(tmp_path, monkeypatch):
    starts = {}
    original = driver.Run._train_level

    def train_level(self, level, state, timer):
        starts[level] = self.exp.layout.fetch(state.model_state)  # before training donates it
        return original(self, level, state, timer)

    monkeypatch.setattr(driver.Run, "_train_level", train_level)
    config = cifar10_noise.get_config("smoke")
    config.data.train_subset = 256
    config.train.batch_size = 64
    config.model.blocks_per_stage = 1  # compiles in a fraction of the time of 3
    config.imp.levels = 1
    with tfds.testing.mock_data(num_examples=300):
        summary = driver.run(config, str(tmp_path))
        runner = driver.open_run(str(tmp_path))
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["level"], r["replicate"]) for r in rows] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert summary["finished"] and all(np.isfinite(r["test_error"]) for r in rows)
    # Nothing is excluded: all conv and dense kernels are prunable; the reference count
    # removes ceil(20%) + 1 of them.
    total = rows[0]["prunable_total"]
    assert rows[0]["total_weights"] == total
    assert rows[2]["prunable_remaining"] == total - -(-total // 5) - 1
    # The rewind point is epoch 1; BatchNorm statistics are trained, restored and never pruned.
    assert runner.ckpt.rewind.all_steps() == [256 // 64]
    state = runner.restore_level(1)
    stats = jax.tree_util.tree_leaves(runner.exp.layout.fetch(state.model_state))
    assert stats and all(np.all(np.isfinite(s)) for s in stats)
    means = runner.exp.layout.fetch(state.model_state["batch_stats"]["stem_bn"]["mean"])
    assert np.any(means != 0)
    # Level 1 starts from the rewind point's batch statistics, not level 0's final ones.
    point, _ = driver.Checkpoints.restore(runner.ckpt.rewind, 4, runner.target)
    chex.assert_trees_all_equal(starts[1], runner.exp.layout.fetch(point.model_state))
    masks = runner.exp.layout.fetch(state.masks)
    assert np.all(masks["stem_bn"]["scale"]) and np.all(masks["stem_bn"]["bias"])
    runner.ckpt.close()
