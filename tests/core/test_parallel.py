"""Sharded training on 8 simulated CPU devices agrees with one device.

The checks run in a subprocess, since the device count is fixed when JAX starts; this file is
also that subprocess's script.
"""

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT

DEVICES = 8
pytestmark = pytest.mark.slow  # every check runs in a subprocess of 8 simulated devices
def on_devices(*args):
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={DEVICES}",
           "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, __file__, *args], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out.stdout


def test_sharded_training_matches_one_device():
    assert "sharded checks passed" in on_devices()


def tiny_config(mode="batch"):
    from configs import mixture_linear

    c = mixture_linear.get_config("smoke")
    c.replicates = DEVICES  # "replicates" mode splits them over the devices
    c.data.mixture_dim, c.data.mixture_train, c.data.mixture_test = 10, 512, 256
    c.eval.fresh_points = 1000
    c.model.hidden = (8,)
    c.train.batch_size, c.train.epochs, c.train.momentum = 64, 3, 0.9
    c.imp.levels = 2
    c.parallel.mode = mode
    return c


@pytest.mark.parametrize("mode", ["batch", "replicates"])
def test_sharded_imp_run_matches_one_device(mode, tmp_path):
    from imp_jax.run import driver

    driver.run(tiny_config(mode), str(tmp_path / "one"))
    on_devices("run", mode, str(tmp_path / "many"))
    rows = [[json.loads(line) for line in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
            for d in ("one", "many")]
    assert [(r["level"], r["replicate"]) for r in rows[0]] == [
        (r["level"], r["replicate"]) for r in rows[1]]
    for a, b in zip(*rows, strict=True):
        assert a["remaining_weights"] == b["remaining_weights"]
        for key in ("train_loss", "test_error", "test_ece_15", "true_abs_error"):
            assert a[key] == pytest.approx(b[key], abs=1e-4), key
    masks = []
    for d in ("one", "many"):
        runner = driver.open_run(str(tmp_path / d))
        masks.append(runner.exp.layout.fetch(runner.restore_level(2).masks))
        runner.ckpt.close()
    import chex

    chex.assert_trees_all_equal(*masks)


def _main() -> None:
    import chex
    import jax
    import jax.numpy as jnp
    import numpy as np

    from imp_jax import masks
    from imp_jax.core import models, parallel, train

    assert jax.device_count() == DEVICES, jax.devices()
    n, dim, replicates = 96, 6, 8
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    y = np.broadcast_to((x[:, 0] > 0).astype(np.int32), (replicates, n))
    model = models.make_model("fcn", 2, hidden=(16,))
    hyper = train.Hyper(batch_size=32, lr=0.1, momentum=0.9)
    keys = jax.random.split(jax.random.key(0), replicates)

    def train_with(layout, batching="vmap"):
        trainer = train.Trainer(model, hyper, n, batch_sharding=layout.batch,
                                state_sharding=layout.per_replicate, replicate_batching=batching)
        state = layout.put_state(trainer.init(keys, jnp.asarray(x)))
        data = layout.put(x, layout.replicated)
        labels = layout.put(y, layout.per_replicate)
        for epoch in range(3):
            order = layout.put(trainer.epoch_order(layout.fetch(state.rng), epoch),
                               layout.per_replicate)
            state, _ = trainer.run_steps(state, data, labels, order, 0, trainer.steps_per_epoch)
        prune = jax.jit(jax.vmap(lambda p, m: masks.prune_global(p, m, 0.3)))
        return layout.fetch(state), layout.fetch(prune(state.params, state.masks)), state

    single, single_masks, _ = train_with(parallel.Layout.create("batch", jax.devices()[:1]))
    for mode, batching in [("batch", "vmap"), ("batch", "unroll"), ("batch", "map"),
                           ("replicates", "vmap")]:
        layout = parallel.Layout.create(mode)
        assert layout.check(replicates, 32, batching) is None
        sharded, sharded_masks, state = train_with(layout, batching)
        chex.assert_trees_all_close(sharded.params, single.params, atol=1e-5, rtol=1e-5)
        chex.assert_trees_all_equal(sharded_masks, single_masks)
        kernel = state.params["hidden_0"]["kernel"]
        expected = layout.per_replicate
        assert kernel.sharding.is_equivalent_to(expected, kernel.ndim), (mode, kernel.sharding)
    # Replicates split over devices cannot be computed one by one.
    problem = parallel.Layout.create("replicates").check(replicates, 32, "unroll")
    assert problem.startswith("config.parallel.replicate_batching: 'unroll'"), problem
    print("sharded checks passed")


if __name__ == "__main__":
    if sys.argv[1:2] == ["run"]:
        from imp_jax.run import driver

        driver.run(tiny_config(sys.argv[2]), sys.argv[3])
    else:
        _main()
