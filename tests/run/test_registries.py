"""A user's own model and optimizer, registered by name, run IMP through the driver and the
command line, with resume; the optimizers and schedules of ``train.optimizer`` /
``train.schedule``."""

import json
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from imp_jax import masks
from imp_jax.core import models, optimizers
from imp_jax.core.train import Hyper
from imp_jax.run import driver
from imp_jax.run.config import ConfigError, validate
from tests.helpers import ROOT, tiny_config


class Bottleneck(nn.Module):
    """A model the library does not have: a bias-free bottleneck with a skip to the logits."""

    num_classes: int

    @nn.compact
    def __call__(self, x, train=False, valid=None):
        del train, valid
        x = x.reshape(x.shape[0], -1)
        h = nn.relu(nn.Dense(6, use_bias=False, name="down")(x))
        return nn.Dense(self.num_classes, name="up")(h) + nn.Dense(
            self.num_classes, use_bias=False, name="skip")(x)


def _register():
    models.register_model("bottleneck", lambda k, **_: Bottleneck(k))
    optimizers.register_optimizer("signsgd", lambda hp: optax.scale_by_sign())


def test_unregistered_names_are_refused_naming_the_field():
    with pytest.raises(ConfigError, match=r"config\.model\.name: must be one of"):
        validate(tiny_config(**{"model.name": "nothing_by_that_name"}))
    with pytest.raises(ConfigError, match=r"config\.train\.momentum: must be > 0"):
        validate(tiny_config(**{"train.optimizer": "momentum", "train.momentum": 0.0}))


@pytest.mark.slow
def test_a_registered_model_and_optimizer_run_two_levels_and_resume(tmp_path):
    _register()
    config = tiny_config(**{"model.name": "bottleneck", "train.optimizer": "signsgd",
                            "imp.levels": 1})
    validate(config)  # the registries are read when the check runs
    first = driver.run(config, str(tmp_path))
    assert first["finished"] and first["levels_done"] == 2
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["level"] for r in rows] == [0, 0, 1, 1]
    assert rows[0]["total_weights"] == 10 * 6 + 6 * 2 + 10 * 2  # down, up, skip kernels
    assert rows[2]["remaining_weights"] < rows[0]["remaining_weights"]
    config.imp.levels = 2  # the same run goes on from its last level
    assert driver.run(config, str(tmp_path))["levels_done"] == 3


@pytest.mark.slow
def test_a_config_file_registers_its_own_model_for_the_command_line(tmp_path):
    config_file = tmp_path / "my_config.py"
    config_file.write_text(
        "import optax\n"
        "from imp_jax.core import models, optimizers\n"
        "from tests.helpers import tiny_config\n"
        "from tests.run.test_registries import Bottleneck\n\n"
        "def get_config(arg=None):\n"
        "    models.register_model('bottleneck', lambda k, **_: Bottleneck(k))\n"
        "    optimizers.register_optimizer('signsgd', lambda hp: optax.scale_by_sign())\n"
        "    return tiny_config(**{'model.name': 'bottleneck', 'train.optimizer': 'signsgd',\n"
        "                          'imp.levels': 1})\n")
    command = [sys.executable, "-m", "experiments.run", f"--config={config_file}",
               f"--workdir={tmp_path / 'run'}"]
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu"}
    for _ in range(2):  # the second call finds the run finished
        out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env,
                             timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
    assert "finished" in out.stderr
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 4


@pytest.mark.parametrize("name", ["sgd", "momentum", "adam", "adamw"])
def test_each_optimizer_keeps_pruned_weights_at_zero(name):
    hp = Hyper(batch_size=8, lr=0.1, momentum=0.9, weight_decay=0.1, optimizer=name)
    opt = masks.masked_optimizer(optimizers.OPTIMIZERS[name](hp))
    params = {"w": jnp.ones((3, 3))}
    mask = {"w": jnp.eye(3, dtype=bool)}
    params = masks.apply_mask(params, mask)
    state = opt.init(params)
    for _ in range(3):
        updates, state = opt.update({"w": jnp.full((3, 3), 0.5)}, state, params, masks=mask)
        params = jax.tree_util.tree_map(lambda p, u: p - 0.1 * u, params, updates)
    assert np.all(np.asarray(params["w"])[~np.eye(3, dtype=bool)] == 0)
    assert np.all(np.asarray(params["w"])[np.eye(3, dtype=bool)] != 1)  # the kept ones moved


def test_schedules_follow_the_global_step():
    def at(schedule, step, **kw):
        hp = Hyper(batch_size=8, lr=0.1, schedule=schedule, total_steps=100, **kw)
        return float(optimizers.SCHEDULES[schedule](hp)(step))

    assert at("step", 49, lr_boundaries=(50,)) == pytest.approx(0.1)
    assert at("step", 50, lr_boundaries=(50,)) == pytest.approx(0.01)
    assert at("cosine", 0) == pytest.approx(0.1) and at("cosine", 50) == pytest.approx(0.05)
    assert at("warmup_cosine", 0, warmup_steps=10) == 0.0
    assert at("warmup_cosine", 10, warmup_steps=10) == pytest.approx(0.1)
