"""Config validation: every bad value stops the run before any work, naming the field; and the
fingerprints that name default run and sweep directories."""

import importlib
from pathlib import Path

import pytest

from configs import cifar10_noise, mixture_linear, mixture_xor, mnist_noise, mnist_resnet_noise
from imp_jax.run import config as config_lib
from imp_jax.run import rundir
from imp_jax.study import sweep


@pytest.mark.parametrize("module", [mnist_noise, mixture_linear, mixture_xor, cifar10_noise,
                                    mnist_resnet_noise])
@pytest.mark.parametrize("arg", [None, "smoke"])
def test_shipped_configs_are_valid(module, arg):
    config_lib.validate(module.get_config(arg))


def test_unknown_variant():
    with pytest.raises(ValueError, match="unknown variant 'tiny'"):
        mnist_noise.get_config("tiny")


BAD = [
    ("replicates", 0, "config.replicates: must be an integer >= 1"),
    ("seed", -1, "config.seed: must be an integer >= 0"),
    ("name", "a b", "config.name: must be a non-empty name"),
    ("data.name", "imagenet", "config.data.name: must be one of"),
    ("data.label_noise", 1.5, r"config.data.label_noise: must be in \[0.0, 1.0\]"),
    ("data.train_subset", -5, "config.data.train_subset: must be an integer >= 0"),
    ("model.name", "mlp", "config.model.name: must be one of"),
    ("model.hidden", (), "config.model.hidden: must be a non-empty tuple"),
    ("model.hidden", (300, 0), "config.model.hidden: must be a non-empty tuple"),
    ("model.init", "xavier", "config.model.init: must be one of"),
    ("train.epochs", 0, "config.train.epochs: must be an integer >= 1"),
    ("train.batch_size", 0, "config.train.batch_size: must be an integer >= 1"),
    ("train.lr", 0.0, r"config.train.lr: must be in \(0.0, inf\)"),
    ("train.lr", float("nan"), "config.train.lr: must be a number"),
    ("train.momentum", 1.0, r"config.train.momentum: must be in \[0.0, 1.0\)"),
    ("train.weight_decay", -1e-4, "config.train.weight_decay"),
    ("train.lr_decay_epochs", (80, 40), "config.train.lr_decay_epochs: must be an increasing"),
    ("train.lr_decay_epochs", (500,), "config.train.lr_decay_epochs: must all be < train.epochs"),
    ("prune.method", "snip", "config.prune.method: must be one of"),
    ("prune.fraction", 1.0, r"config.prune.fraction: must be in \(0.0, 1.0\)"),
    ("prune.fraction", 0.0, r"config.prune.fraction: must be in \(0.0, 1.0\)"),
    ("prune.exclude", ("[",), "config.prune.exclude: has an invalid regular expression"),
    ("imp.levels", -1, "config.imp.levels: must be an integer >= 0"),
    ("imp.rewind", "10 epochs", "config.imp.rewind: must look like"),
    ("imp.min_weights", -1, "config.imp.min_weights"),
    ("checkpoint.every_epochs", -1, "config.checkpoint.every_epochs"),
    ("eval.num_bins", 0, "config.eval.num_bins: must be an integer >= 1"),
    ("parallel.replicate_batching", "pmap", "config.parallel.replicate_batching: must be one of"),
]


@pytest.mark.parametrize(("field", "value", "message"), BAD, ids=[f"{b[0]}={b[1]}" for b in BAD])
def test_bad_values_name_the_field(field, value, message):
    c = mnist_noise.get_config("smoke")
    section, _, name = field.rpartition(".")
    target = c[section] if section else c
    with target.unlocked(), target.ignore_type():
        target[name] = value
    with pytest.raises(config_lib.ConfigError, match=message):
        config_lib.validate(c)


def test_mixture_needs_nu():
    c = mixture_linear.get_config("smoke")
    c.data.mixture_nu = 0.0
    with pytest.raises(config_lib.ConfigError, match=r"config\.data\.mixture_nu: must be > 0"):
        config_lib.validate(c)


def test_unknown_field():
    c = mnist_noise.get_config()
    c.train.learning_rate = 0.1
    with pytest.raises(config_lib.ConfigError, match=r"train\.learning_rate: unknown field"):
        config_lib.validate(c)


def test_fingerprint_ignores_paths_and_stop_conditions():
    a, b = mnist_noise.get_config(), mnist_noise.get_config()
    b.data.manual_dir = "/elsewhere"
    b.imp.levels = 40
    b.parallel.replicate_batching = "map"
    assert config_lib.fingerprint(a) == config_lib.fingerprint(b)
    b.train.lr = 0.05
    assert config_lib.fingerprint(a) != config_lib.fingerprint(b)


CONFIG_FILES = sorted(p.stem for p in (Path(__file__).parents[2] / "configs").glob("*.py")
                      if p.stem not in ("variants", "reproduce"))


def fingerprints() -> dict[str, str]:
    """The fingerprint of every shipped config (run or sweep) and of its smoke variant."""
    out = {}
    for name in CONFIG_FILES:
        module = importlib.import_module(f"configs.{name}")
        for arg in (None, "smoke"):
            try:
                c = module.get_config(arg)
            except ValueError:  # a config without that variant
                continue
            out[f"{name}:{arg}"] = (sweep.fingerprint(c) if "sweep" in c
                                    else config_lib.fingerprint(c))
    return out


def test_a_new_field_with_a_default_keeps_every_directory_name(monkeypatch):
    before = fingerprints()
    monkeypatch.setitem(config_lib.FIELDS, "train.clip_norm",
                        config_lib.Field(0.0, lambda v: None, "gradient clipping (0 = none)"))
    assert "clip_norm" in config_lib.base_config().train
    assert fingerprints() == before
    c = mnist_noise.get_config()
    c.train.clip_norm = 1.0  # set, it names another run
    assert config_lib.fingerprint(c) != before["mnist_noise:None"]


def test_a_run_named_by_the_earlier_fingerprint_is_found(tmp_path):
    c = mixture_linear.get_config("smoke")
    old = rundir.RunDir(tmp_path / f"{c.name}-{config_lib.legacy_fingerprint(c)}")
    assert rundir.default_dir(c, tmp_path) == tmp_path / f"{c.name}-{config_lib.fingerprint(c)}"
    old.claim(c)  # a run an earlier version made
    other = mixture_linear.get_config("smoke")
    other.train.lr = 0.05
    rundir.RunDir(tmp_path / f"{c.name}-0123456789").claim(other)  # another config's
    assert rundir.default_dir(c, tmp_path) == old.root
    assert rundir.default_dir(other, tmp_path) == tmp_path / f"{c.name}-0123456789"


def test_rewind_steps():
    assert config_lib.rewind_steps("0", 469) == 0
    assert config_lib.rewind_steps("500it", 469) == 500
    assert config_lib.rewind_steps("500", 469) == 500
    assert config_lib.rewind_steps("10ep", 469) == 4690
