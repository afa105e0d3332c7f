"""The run configuration: defaults, validation, and the identity of a run.

Configs are ``ml_collections.ConfigDict`` objects built by ``configs/NAME.py:get_config(arg)`` on
top of :func:`base_config`. :func:`validate` checks every field before any work starts and raises
:class:`ConfigError` naming the field; :func:`identity` is the part of a config that determines
the results (what a run directory is keyed on).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from typing import Any

import ml_collections

from imp_jax import data, masks, models, parallel, train

PRUNE_METHODS = ("magnitude_global", "magnitude_layerwise", "random_global", "random_layerwise")
# Fields that do not change what a run computes: where data lives, how often to checkpoint or
# log, evaluation batching, and the stop conditions (raising them extends a finished run).
NON_IDENTITY_FIELDS = ("data.data_dir", "data.manual_dir", "checkpoint.every_epochs",
                       "log.every_epochs", "train.eval_batch_size", "imp.levels",
                       "imp.min_weights", "parallel.mode", "parallel.replicate_batching")
_REWIND = re.compile(r"^(\d+)(it|ep)?$")


class ConfigError(ValueError):
    """A config field has an invalid value; the message names the field."""


def base_config() -> ml_collections.ConfigDict:
    """Every field with its default; configs override what they need."""
    c = ml_collections.ConfigDict()
    c.name = "run"
    c.seed = 0  # model init and data order; replicate r uses fold_in(seed, r)
    c.replicates = 1

    c.data = ml_collections.ConfigDict()
    c.data.name = "mnist"
    c.data.data_dir = ""  # tensorflow-datasets data_dir ("" = its default)
    c.data.manual_dir = ""  # folder holding the original archives, for offline preparation
    c.data.label_noise = 0.0
    c.data.seed = 0  # subset, split and label noise: the same for every replicate
    c.data.train_subset = 0  # 0 = the whole training set
    c.data.validation_size = 0
    c.data.mixture_nu = 0.0
    c.data.mixture_dim = 100
    c.data.mixture_train = 10_000
    c.data.mixture_test = 5_000
    c.data.classes = 0  # 0 = all; k = only the first k classes (labels 0..k-1)
    c.data.augment = False  # random flip + 4-pixel-padded crop; images kept uint8 on device
    # Per-channel statistics the images are standardised with: the dataset's own, or
    # "imagenet" (RGB datasets only), which the reference code's CIFAR-10 loader uses.
    c.data.normalisation = "dataset"

    c.model = ml_collections.ConfigDict()
    c.model.name = "fcn"
    c.model.hidden = (300,)
    c.model.use_bias = True
    c.model.init = "kaiming_normal"
    c.model.bias_init = "zeros"  # or "torch_default", U(+-1/sqrt(fan_in)) as the reference code
    c.model.bn_init = "ones"  # BatchNorm scales; or "uniform", U(0, 1) as the reference code
    c.model.width = 0  # ResNet W or VGG-16 base width; 0 = the standard one (16, 64)
    c.model.blocks_per_stage = 3  # ResNet: 3 = CIFAR "ResNet-18" (20 layers), 1 = "ResNet-6"
    c.model.growth_rate = 32  # DenseNet-121's k

    c.train = ml_collections.ConfigDict()
    c.train.epochs = 1
    c.train.batch_size = 128
    c.train.lr = 0.1
    c.train.momentum = 0.0
    c.train.nesterov = False
    c.train.weight_decay = 0.0
    c.train.lr_decay_epochs = ()  # epochs at which the learning rate is multiplied by lr_decay
    c.train.lr_decay = 0.1
    c.train.eval_batch_size = 10_000
    c.train.on_divergence = "stop"  # NaN/inf loss: "stop" the run, or "skip_replicate"

    c.prune = ml_collections.ConfigDict()
    c.prune.method = "magnitude_global"
    c.prune.fraction = 0.2
    c.prune.exclude = ()  # regexes of leaf paths never pruned, e.g. ("^output/",)
    # How many weights a level removes: "exact" = ceil(fraction * prunable remaining);
    # "openlth" = the reference code's ceil(fraction * all kernel weights remaining) + 1 (see
    # imp_jax.masks.num_to_prune), which the study's published counts follow.
    c.prune.count = "exact"

    c.imp = ml_collections.ConfigDict()
    c.imp.levels = 10  # pruning rounds after the dense level 0
    c.imp.rewind = "0"  # "0": initial weights; "500it" / "500": after 500 steps; "10ep": epochs
    c.imp.min_weights = 0  # stop before a level would keep fewer prunable weights than this
    c.imp.reinit = False  # control: train each pruned mask from a fresh random initialisation

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every_epochs = 10  # in-level checkpoints; 0 = only at the end of each level

    c.eval = ml_collections.ConfigDict()
    c.eval.num_bins = 15
    c.eval.fresh_points = 100_000  # mixtures: fresh points to compare with the exact p(y|x)

    c.parallel = ml_collections.ConfigDict()
    c.parallel.mode = "batch"  # split each minibatch over the devices, or "replicates"
    # How replicates are computed on a device: "vmap", "unroll", "map" (see
    # imp_jax.train.REPLICATE_BATCHING), or "auto": vmap on accelerators, the faster of the
    # other two on a CPU.
    c.parallel.replicate_batching = "auto"

    c.log = ml_collections.ConfigDict()
    c.log.every_epochs = 10  # progress lines within a level; 0 = none
    return c


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _int_at_least(lo: int) -> Callable[[Any], str | None]:
    return lambda v: None if _is_int(v) and v >= lo else f"must be an integer >= {lo}"


def _number_in(lo: float, hi: float, *, lo_open: bool = False,
               hi_open: bool = False) -> Callable[[Any], str | None]:
    def check(v):
        if not _is_num(v) or v != v:
            return "must be a number"
        if (v <= lo if lo_open else v < lo) or (v >= hi if hi_open else v > hi):
            return (f"must be in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}")
        return None
    return check


def _one_of(options: tuple[str, ...]) -> Callable[[Any], str | None]:
    return lambda v: None if v in options else f"must be one of {options}"


def _is_bool(v: Any) -> str | None:
    return None if isinstance(v, bool) else "must be True or False"


def _is_str(v: Any) -> str | None:
    return None if isinstance(v, str) else "must be a string"


def _hidden(v: Any) -> str | None:
    ok = isinstance(v, (tuple, list)) and len(v) > 0 and all(_is_int(w) and w >= 1 for w in v)
    return None if ok else "must be a non-empty tuple of positive integers, e.g. (300,)"


def _epochs_list(v: Any) -> str | None:
    ok = isinstance(v, (tuple, list)) and all(_is_int(e) and e >= 1 for e in v)
    return None if ok and list(v) == sorted(set(v)) else (
        "must be an increasing tuple of positive integers (epochs)")


def _patterns(v: Any) -> str | None:
    if not isinstance(v, (tuple, list)) or not all(isinstance(p, str) for p in v):
        return "must be a tuple of regular expressions, e.g. ('^output/',)"
    for p in v:
        try:
            re.compile(p)
        except re.error as e:
            return f"has an invalid regular expression {p!r}: {e}"
    return None


def _rewind(v: Any) -> str | None:
    ok = isinstance(v, str) and _REWIND.match(v)
    return None if ok else 'must look like "0", "500it" (steps) or "10ep" (epochs)'


RULES: dict[str, Callable[[Any], str | None]] = {
    "name": lambda v: None if isinstance(v, str) and re.fullmatch(r"[\w.-]+", v) else (
        "must be a non-empty name of letters, digits, '_', '-' or '.'"),
    "seed": _int_at_least(0),
    "replicates": _int_at_least(1),
    "data.name": _one_of(data.DATASETS),
    "data.data_dir": _is_str,
    "data.manual_dir": _is_str,
    "data.label_noise": _number_in(0.0, 1.0),
    "data.seed": _int_at_least(0),
    "data.train_subset": _int_at_least(0),
    "data.validation_size": _int_at_least(0),
    "data.mixture_nu": _number_in(0.0, float("inf"), hi_open=True),
    "data.mixture_dim": _int_at_least(2),
    "data.mixture_train": _int_at_least(1),
    "data.mixture_test": _int_at_least(1),
    "data.classes": lambda v: None if _is_int(v) and (v == 0 or v >= 2) else (
        "must be 0 (all classes) or an integer >= 2"),
    "data.augment": _is_bool,
    "data.normalisation": _one_of(data.NORMALISATIONS),
    "model.name": _one_of(models.MODELS),
    "model.hidden": _hidden,
    "model.use_bias": _is_bool,
    "model.init": _one_of(tuple(models.INITS)),
    "model.bias_init": _one_of(models.BIAS_INITS),
    "model.bn_init": _one_of(models.BN_INITS),
    "model.width": _int_at_least(0),
    "model.blocks_per_stage": _int_at_least(1),
    "model.growth_rate": _int_at_least(1),
    "train.epochs": _int_at_least(1),
    "train.batch_size": _int_at_least(1),
    "train.lr": _number_in(0.0, float("inf"), lo_open=True, hi_open=True),
    "train.momentum": _number_in(0.0, 1.0, hi_open=True),
    "train.nesterov": _is_bool,
    "train.weight_decay": _number_in(0.0, float("inf"), hi_open=True),
    "train.lr_decay_epochs": _epochs_list,
    "train.lr_decay": _number_in(0.0, 1.0, lo_open=True),
    "train.eval_batch_size": _int_at_least(1),
    "train.on_divergence": _one_of(("stop", "skip_replicate")),
    "prune.method": _one_of(PRUNE_METHODS),
    "prune.fraction": _number_in(0.0, 1.0, lo_open=True, hi_open=True),
    "prune.exclude": _patterns,
    "prune.count": _one_of(masks.COUNTS),
    "imp.levels": _int_at_least(0),
    "imp.rewind": _rewind,
    "imp.min_weights": _int_at_least(0),
    "imp.reinit": _is_bool,
    "checkpoint.every_epochs": _int_at_least(0),
    "eval.num_bins": _int_at_least(1),
    "eval.fresh_points": _int_at_least(1),
    "log.every_epochs": _int_at_least(0),
    "parallel.mode": _one_of(parallel.MODES),
    "parallel.replicate_batching": _one_of(("auto", *train.REPLICATE_BATCHING)),
}


def _flatten(c: ml_collections.ConfigDict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in c.items():
        if isinstance(v, ml_collections.ConfigDict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks every field; raises :class:`ConfigError` naming the first bad field.

    Checks that need the loaded data (a batch larger than the training set, a rewind point past
    the end of training) are made by the driver before training starts.
    """
    if "sweep" in config:
        raise ConfigError("config.sweep: this config is a sweep (see imp_jax.sweep); run it with "
                          "python -m experiments.sweep")
    flat = _flatten(config)
    known = set(_flatten(base_config()))
    for key in flat:
        if key not in known:
            raise ConfigError(f"config.{key}: unknown field")
    for key in known:
        if key not in flat:
            raise ConfigError(f"config.{key}: missing (build configs on imp_jax.config."
                              f"base_config())")
        problem = RULES[key](flat[key])
        if problem:
            raise ConfigError(f"config.{key}: {problem}, got {flat[key]!r}")
    if config.data.name.startswith("mixture_") and config.data.mixture_nu <= 0:
        raise ConfigError(f"config.data.mixture_nu: must be > 0 for {config.data.name}, got "
                          f"{config.data.mixture_nu!r}")
    if config.data.name.startswith("mixture_") and config.data.mixture_dim % 2:
        raise ConfigError(f"config.data.mixture_dim: must be even, got {config.data.mixture_dim}")
    if config.data.normalisation == "imagenet" and config.data.name not in ("cifar10",
                                                                             "cifar100"):
        raise ConfigError(f"config.data.normalisation: 'imagenet' is for the RGB datasets "
                          f"(cifar10, cifar100), not {config.data.name!r}")
    if any(e >= config.train.epochs for e in config.train.lr_decay_epochs):
        raise ConfigError(f"config.train.lr_decay_epochs: must all be < train.epochs "
                          f"({config.train.epochs}), got {config.train.lr_decay_epochs!r}")


def from_json_dict(values: dict[str, Any]) -> ml_collections.ConfigDict:
    """A config stored as JSON (``config.json``), laid over today's :func:`base_config`.

    Fields added to the code since the run was made keep their defaults, so older run
    directories stay readable and resumable; JSON lists become tuples where the default is one.
    """
    config = base_config()
    for key, value in _flatten(ml_collections.ConfigDict(values)).items():
        *sections, field = key.split(".")
        target = config
        for section in sections:
            target = target[section]
        with target.unlocked(), target.ignore_type():
            default = target.get(field)
            target[field] = tuple(value) if isinstance(default, tuple) else value
    return config


def to_json_dict(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The config as plain JSON types (tuples become lists)."""
    return json.loads(config.to_json())


def identity(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The fields that determine a run's results (all but :data:`NON_IDENTITY_FIELDS`)."""
    flat = _flatten(ml_collections.ConfigDict(to_json_dict(config)))
    return {k: v for k, v in sorted(flat.items()) if k not in NON_IDENTITY_FIELDS}


def fingerprint(config: ml_collections.ConfigDict) -> str:
    """A short hash of :func:`identity`, used to name default run directories."""
    blob = json.dumps(identity(config), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:10]


def rewind_steps(rewind: str, steps_per_epoch: int) -> int:
    """The rewind point in training steps (``"10ep"`` is 10 epochs)."""
    match = _REWIND.match(rewind)
    if match is None:
        raise ConfigError(f"config.imp.rewind: {_rewind(rewind)}, got {rewind!r}")
    n, unit = int(match.group(1)), match.group(2)
    return n * steps_per_epoch if unit == "ep" else n
