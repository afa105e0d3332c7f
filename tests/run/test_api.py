"""The Python API: IMP on a user's own Flax module, arrays and optax optimizer, through the
driver the command line uses (its run directory, checkpoints and resume)."""

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest
from flax import nnx

from imp_jax import api


class TwoLayer(nn.Module):
    """A user's model: not one of the library's."""

    @nn.compact
    def __call__(self, x, train=False, valid=None):
        del train, valid
        return nn.Dense(3, name="out")(nn.relu(nn.Dense(16, name="hidden")(x)))


def _arrays(n=256, d=8, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(d, 3))
    x = rng.normal(size=(2 * n, d)).astype(np.float32)
    y = np.argmax(x @ w, axis=1)
    return x[:n], y[:n], x[n:], y[n:]


@pytest.mark.slow
def test_imp_on_my_model_arrays_and_optimizer_resumes(tmp_path):
    arrays = _arrays()
    fields = {"train.epochs": 3, "train.batch_size": 32, "imp.levels": 2, "replicates": 2,
              "data.label_noise": 0.1, "checkpoint.every_epochs": 1}
    result = api.run_imp(TwoLayer(), arrays, str(tmp_path), optimizer=optax.adam(1e-2),
                         **fields)
    assert result.summary.finished and len(result.rows) == 3 * 2
    first = [r for r in result.rows if r["level"] == 0]
    assert first[0]["total_weights"] == 8 * 16 + 16 * 3
    assert all(r["test_error"] < 0.5 for r in first)  # it learned (chance: 2/3)
    params = result.params(2)
    kernel = np.asarray(params["hidden"]["kernel"])
    assert kernel.shape == (2, 8, 16)  # the replicates' axis first
    remaining = [r["remaining_weights"] for r in result.rows if r["level"] == 2]
    assert int(np.count_nonzero(kernel[0])) + int(np.count_nonzero(
        np.asarray(params["out"]["kernel"])[0])) <= remaining[0]
    # The same call finds the run finished: nothing trained again, the same rows.
    again = api.run_imp(TwoLayer(), arrays, str(tmp_path), optimizer=optax.adam(1e-2),
                        **fields)
    assert again.rows == result.rows


@pytest.mark.slow
def test_without_an_optimizer_the_config_trains(tmp_path):
    result = api.run_imp(TwoLayer(), _arrays(), str(tmp_path), name="plain_sgd",
                         **{"train.epochs": 2, "train.batch_size": 32, "imp.levels": 1,
                            "train.lr": 0.05})
    assert [r["level"] for r in result.rows] == [0, 1]
    assert jax.tree_util.tree_structure(result.params(0)) is not None


class NnxTwoLayer(nnx.Module):
    """A user's Flax NNX model."""

    def __init__(self, din, dout, *, rngs):
        self.hidden = nnx.Linear(din, 16, rngs=rngs)
        self.out = nnx.Linear(16, dout, rngs=rngs)

    def __call__(self, x, train=False, valid=None):
        del train, valid
        return self.out(nnx.relu(self.hidden(x)))


@pytest.mark.slow
def test_an_nnx_model_runs_through_the_linen_bridge(tmp_path):
    result = api.run_imp(nnx.bridge.to_linen(NnxTwoLayer, 8, 3), _arrays(), str(tmp_path),
                         optimizer=optax.adam(1e-2), name="nnx_two_layer",
                         **{"train.epochs": 3, "train.batch_size": 32, "imp.levels": 1})
    dense, pruned = (r["remaining_weights"] for r in result.rows)
    assert dense == 8 * 16 + 16 * 3 and 0.79 * dense <= pruned <= 0.81 * dense
    assert result.rows[0]["test_error"] < 0.5
    kernel = np.asarray(result.params(1)["hidden"]["kernel"])
    assert kernel.shape == (1, 8, 16) and np.count_nonzero(kernel) < kernel.size
