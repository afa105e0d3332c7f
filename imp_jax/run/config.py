"""The run configuration: defaults, validation, and the identity of a run.

Configs are ``ml_collections.ConfigDict`` objects built by ``configs/NAME.py:get_config(arg)`` on
top of :func:`base_config`. :func:`validate` checks every field before any work starts and raises
:class:`ConfigError` naming the field; :func:`identity` is the part of a config that determines
the results (what a run directory is keyed on).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import ml_collections

from imp_jax import masks
from imp_jax.core import models, optimizers, parallel, pruning, train
from imp_jax.data import datasets, tasks

# Fields that do not change what a run computes are marked ``identity=False``: where data
# lives, how often to checkpoint or log, evaluation batching, the device layout and the stop
# conditions (raising them extends a finished run).
_REWIND = re.compile(r"^(\d+)(it|ep)?$")
# Seeds feed jax.random.key, which takes a signed 64-bit integer.
_MAX_SEED = 2**63 - 1


class ConfigError(ValueError):
    """A config field has an invalid value; the message names the field."""


Check = Callable[[Any], "str | None"]


def is_int(v: Any) -> bool:
    """An int that is not a bool."""
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    """An int or float that is not a bool, nor NaN."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v


def _int_in(lo: int, hi: int | None = None) -> Check:
    def check(v):
        if is_int(v) and v >= lo and (hi is None or v <= hi):
            return None
        return f"must be an integer >= {lo}" + ("" if hi is None else f" and <= {hi}")
    return check


def _number_in(lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False) -> Check:
    def check(v):
        if not is_number(v):
            return "must be a number"
        if (v <= lo if lo_open else v < lo) or (v >= hi if hi_open else v > hi):
            return f"must be in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
        return None
    return check


def _one_of(options: Iterable[str] | Mapping[str, Any]) -> Check:
    # A registry (a dict) is read when the check runs: names registered after this module was
    # imported (a user's model, task or optimizer) are valid.
    if not isinstance(options, Mapping):
        options = tuple(options)
    return lambda v: None if v in options else f"must be one of {tuple(options)}"


def _is_bool(v: Any) -> str | None:
    return None if isinstance(v, bool) else "must be True or False"


def _is_str(v: Any) -> str | None:
    return None if isinstance(v, str) else "must be a string"


def _name(v: Any) -> str | None:
    ok = isinstance(v, str) and re.fullmatch(r"[\w.-]+", v)
    return None if ok else "must be a non-empty name of letters, digits, '_', '-' or '.'"


def _classes(v: Any) -> str | None:
    return None if is_int(v) and (v == 0 or v >= 2) else (
        "must be 0 (all classes) or an integer >= 2")


def _hidden(v: Any) -> str | None:
    ok = isinstance(v, (tuple, list)) and len(v) > 0 and all(is_int(w) and w >= 1 for w in v)
    return None if ok else "must be a non-empty tuple of positive integers, e.g. (300,)"


def _epochs_list(v: Any) -> str | None:
    ok = isinstance(v, (tuple, list)) and all(is_int(e) and e >= 1 for e in v)
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


@dataclasses.dataclass(frozen=True)
class Field:
    """One config field: its default, its check (None or what is wrong), its documentation, and
    whether it is part of a run's identity (changes what the run computes)."""

    default: Any
    check: Check
    doc: str
    identity: bool = True


# Every field, declared once, sections in dotted names (configs override what they need).
FIELDS: dict[str, Field] = {
    "name": Field("run", _name, "the run's name; default run directories are "
                                "runs/<name>-<hash of the identity fields>"),
    "seed": Field(0, _int_in(0, _MAX_SEED), "model init and data order; replicate r uses "
                                            "fold_in(seed, r)"),
    "replicates": Field(1, _int_in(1), "seeds run as one compiled program (they share the noisy "
                                       "labels)"),
    "data.name": Field("mnist", _one_of(tasks.TASKS), "the task (imp_jax.data.tasks)"),
    "data.data_dir": Field("", _is_str, "tensorflow-datasets data_dir ('' = its default)",
                           identity=False),
    "data.manual_dir": Field("", _is_str, "folder of the original archives, to prepare a "
                                          "dataset offline", identity=False),
    "data.label_noise": Field(0.0, _number_in(0.0, 1.0), "fraction of training labels replaced "
                                                         "by uniformly random ones"),
    "data.seed": Field(0, _int_in(0, _MAX_SEED), "subset, split and label noise: the same for "
                                                 "every replicate"),
    "data.train_subset": Field(0, _int_in(0), "keep this many training examples (0 = all)"),
    "data.validation_size": Field(0, _int_in(0), "examples held out of training for model "
                                                 "selection"),
    "data.mixture_nu": Field(0.0, _number_in(0.0, 100.0), "mixtures: the mean scale nu"),
    "data.mixture_dim": Field(100, _int_in(2), "mixtures: the input dimension D"),
    "data.mixture_train": Field(10_000, _int_in(1), "mixtures: training points"),
    "data.mixture_test": Field(5_000, _int_in(1), "mixtures: test points"),
    "data.classes": Field(0, _classes, "keep only the first k classes (0 = all)"),
    "data.augment": Field(False, _is_bool, "random flip + 4-pixel-padded crop on device; "
                                           "images kept uint8 on device"),
    "data.normalisation": Field("dataset", _one_of(datasets.NORMALISATIONS),
                                "channel statistics the images are standardised with: the "
                                "dataset's own, or 'imagenet' (RGB datasets; the reference "
                                "code's choice for CIFAR-10)"),
    "model.name": Field("fcn", _one_of(models.MODELS), "the architecture (imp_jax.core.models)"),
    "model.hidden": Field((300,), _hidden, "FCN: hidden widths"),
    "model.use_bias": Field(True, _is_bool, "biases of the dense layers"),
    "model.init": Field("kaiming_normal", _one_of(models.INITS), "kernel initialisation"),
    "model.bias_init": Field("zeros", _one_of(models.BIAS_INITS),
                             "dense biases: zeros, or 'torch_default' U(+-1/sqrt(fan_in)) as "
                             "the reference code"),
    "model.bn_init": Field("ones", _one_of(models.BN_INITS),
                           "BatchNorm scales: ones, or 'uniform' U(0, 1) as the reference code"),
    "model.width": Field(0, _int_in(0), "ResNet W or VGG-16 base width (0 = the standard one)"),
    "model.blocks_per_stage": Field(3, _int_in(1), "ResNet: 3 = CIFAR 'ResNet-18' (20 layers), "
                                                   "1 = 'ResNet-6'"),
    "model.growth_rate": Field(32, _int_in(1), "DenseNet-121's k"),
    "train.epochs": Field(1, _int_in(1), "epochs per level"),
    "train.batch_size": Field(128, _int_in(1), "examples per step"),
    "train.lr": Field(0.1, _number_in(0.0, float("inf"), lo_open=True, hi_open=True),
                      "learning rate"),
    "train.optimizer": Field("sgd", _one_of(optimizers.OPTIMIZERS),
                             "the update direction (imp_jax.core.optimizers): sgd (with "
                             "train.momentum), momentum (train.momentum > 0), adam, adamw, or "
                             "one registered with optimizers.register_optimizer"),
    "train.schedule": Field("step", _one_of(optimizers.SCHEDULES),
                            "the learning rate against the global step: step (x lr_decay at "
                            "lr_decay_epochs), cosine, warmup_cosine, or a registered one"),
    "train.warmup_epochs": Field(0, _int_in(0), "warmup_cosine: epochs of linear warm-up"),
    "train.momentum": Field(0.0, _number_in(0.0, 1.0, hi_open=True), "SGD momentum"),
    "train.nesterov": Field(False, _is_bool, "Nesterov momentum"),
    "train.weight_decay": Field(0.0, _number_in(0.0, float("inf"), hi_open=True),
                                "L2 penalty added to the gradient"),
    "train.lr_decay_epochs": Field((), _epochs_list, "epochs at which the learning rate is "
                                                     "multiplied by lr_decay"),
    "train.lr_decay": Field(0.1, _number_in(0.0, 1.0, lo_open=True), "learning-rate factor"),
    "train.eval_batch_size": Field(10_000, _int_in(1), "examples per evaluation batch",
                                   identity=False),
    "train.on_divergence": Field("stop", _one_of(("stop", "skip_replicate")),
                                 "NaN/inf loss: stop the run, or skip the replicate"),
    "prune.method": Field("magnitude_global", _one_of(pruning.METHODS),
                          "the pruning rule (imp_jax.core.pruning), or a control"),
    "prune.fraction": Field(0.2, _number_in(0.0, 1.0, lo_open=True, hi_open=True),
                            "fraction of the remaining weights pruned a level"),
    "prune.exclude": Field((), _patterns, "regexes of leaf paths never pruned, e.g. "
                                          "('^output/',)"),
    "prune.count": Field("exact", _one_of(masks.COUNTS),
                         "'exact' = ceil(fraction x prunable remaining); 'openlth' = the "
                         "reference code's ceil(fraction x all kernel weights remaining) + 1"),
    "imp.levels": Field(10, _int_in(0), "pruning rounds after the dense level 0", identity=False),
    "imp.rewind": Field("0", _rewind, "'0': initial weights; '500it' / '500': after 500 steps; "
                                      "'10ep': after 10 epochs"),
    "imp.min_weights": Field(0, _int_in(0), "stop before a level would keep fewer prunable "
                                            "weights", identity=False),
    "imp.stop_after_minimum": Field(0, _int_in(0), "stop this many levels past the best "
                                                   "pruned model of the mean test error (0 = "
                                                   "prune on to imp.levels / imp.min_weights)",
                                    identity=False),
    "imp.reinit": Field(False, _is_bool, "control: train each pruned mask from a fresh random "
                                         "initialisation"),
    "checkpoint.every_epochs": Field(10, _int_in(0), "in-level checkpoints (0 = at the end of "
                                                     "each level only)", identity=False),
    "eval.num_bins": Field(15, _int_in(1), "ECE bins"),
    "eval.fresh_points": Field(100_000, _int_in(1), "mixtures: fresh points compared with the "
                                                    "exact p(y|x)"),
    "log.every_epochs": Field(0, _int_in(0), "progress lines within a level every N epochs "
                                             "(0 = about every log.every_seconds)",
                              identity=False),
    "log.every_seconds": Field(30, _int_in(1), "progress lines about this often (when "
                                               "log.every_epochs is 0)", identity=False),
    "parallel.mode": Field("batch", _one_of(parallel.MODES), "split each minibatch over the "
                                                             "devices, or 'replicates'",
                           identity=False),
    "parallel.replicate_batching": Field("auto", _one_of(("auto", *train.REPLICATE_BATCHING)),
                                         "vmap, unroll, map (imp_jax.core.train), or auto",
                                         identity=False),
}
NON_IDENTITY_FIELDS = tuple(k for k, f in FIELDS.items() if not f.identity)


def base_config() -> ml_collections.ConfigDict:
    """Every field with its default (:data:`FIELDS`); configs override what they need."""
    c = ml_collections.ConfigDict()
    for key, field in FIELDS.items():
        set_field(c, key, field.default, create=True)
    return c


def set_field(config: ml_collections.ConfigDict, key: str, value: Any, *,
              create: bool = False) -> None:
    """Sets the dotted field ``key`` of ``config`` (lists become tuples), creating sections
    and fields only when ``create``.

    Raises:
      ConfigError: an unknown field, or a value of another type than the field's.
    """
    *sections, name = key.split(".")
    target = config
    try:
        for section in sections:
            if create and section not in target:
                target[section] = ml_collections.ConfigDict()
            target = target[section]
        if not create and name not in target:
            raise KeyError(name)
        target[name] = tuple(value) if isinstance(value, list) else value
    except KeyError as e:
        raise ConfigError(f"config.{key}: unknown field") from e
    except TypeError as e:
        raise ConfigError(f"cannot set {key} to {value!r} ({e})") from e


def describe(config: ml_collections.ConfigDict) -> str:
    """Every field of ``config`` with its value and documentation, one per line."""
    flat = flatten(config)
    width = max(map(len, flat))
    return "\n".join(f"{key:<{width}} = {flat[key]!r:<24} # {FIELDS[key].doc}"
                     if key in FIELDS else f"{key:<{width}} = {flat[key]!r}" for key in flat)


def flatten(c: ml_collections.ConfigDict, prefix: str = "") -> dict[str, Any]:
    """The fields of ``c`` by dotted name."""
    out = {}
    for k, v in c.items():
        if isinstance(v, ml_collections.ConfigDict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks every field; raises :class:`ConfigError` naming the first bad field.

    Checks that need the loaded data or the model (a batch larger than the training set, a
    rewind point past the end of training, exclusions that leave nothing prunable) are made
    when the experiment is built, before training starts.
    """
    if "sweep" in config:
        raise ConfigError("config.sweep: this config is a sweep (see imp_jax.study.sweep); run it "
                          "with python -m experiments.sweep")
    flat = flatten(config)
    for key in flat:
        if key not in FIELDS:
            raise ConfigError(f"config.{key}: unknown field")
    for key, field in FIELDS.items():
        if key not in flat:
            raise ConfigError(f"config.{key}: missing (build configs on imp_jax.run.config."
                              f"base_config())")
        problem = field.check(flat[key])
        if problem:
            raise ConfigError(f"config.{key}: {problem}, got {flat[key]!r}")
    task = tasks.get(config.data.name)
    if task.is_mixture and config.data.mixture_nu <= 0:
        raise ConfigError(f"config.data.mixture_nu: must be > 0 for {config.data.name}, got "
                          f"{config.data.mixture_nu!r}")
    if task.is_mixture and config.data.mixture_dim % 2:
        raise ConfigError(f"config.data.mixture_dim: must be even, got {config.data.mixture_dim}")
    if config.data.normalisation == "imagenet" and not task.rgb:
        raise ConfigError(f"config.data.normalisation: 'imagenet' is for RGB datasets, not "
                          f"{config.data.name!r}")
    if config.train.optimizer == "momentum" and config.train.momentum <= 0:
        raise ConfigError(f"config.train.momentum: must be > 0 for train.optimizer 'momentum', "
                          f"got {config.train.momentum!r}")
    if config.train.warmup_epochs >= config.train.epochs and config.train.warmup_epochs:
        raise ConfigError(f"config.train.warmup_epochs: must be < train.epochs "
                          f"({config.train.epochs}), got {config.train.warmup_epochs!r}")
    if any(e >= config.train.epochs for e in config.train.lr_decay_epochs):
        raise ConfigError(f"config.train.lr_decay_epochs: must all be < train.epochs "
                          f"({config.train.epochs}), got {config.train.lr_decay_epochs!r}")


def from_json_dict(values: dict[str, Any], base: ml_collections.ConfigDict | None = None
                   ) -> ml_collections.ConfigDict:
    """A config stored as JSON (``config.json``), laid over today's :func:`base_config` (or
    over ``base``, e.g. a sweep's).

    Fields added to the code since the run was made keep their defaults, so older run
    directories stay readable and resumable; JSON lists become tuples where the default is one.
    """
    config = base_config() if base is None else base
    for key, value in flatten(ml_collections.ConfigDict(values)).items():
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
    flat = flatten(ml_collections.ConfigDict(to_json_dict(config)))
    return {k: v for k, v in sorted(flat.items()) if k not in NON_IDENTITY_FIELDS}


def _json_default(key: str) -> Any:
    """The default of field ``key`` as :func:`identity` shows values (tuples as lists)."""
    return json.loads(json.dumps(FIELDS[key].default))


def _hash(values: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:10]


def fingerprint(config: ml_collections.ConfigDict,
                defaults: dict[str, Any] | None = None) -> str:
    """A short hash of the :func:`identity` fields that differ from their defaults, naming
    default run directories (as OpenLTH names its runs).

    A field added with a default therefore leaves every existing config's fingerprint as it
    was. ``defaults`` gives the defaults of fields outside :data:`FIELDS` (a sweep section's);
    such a field without one is always hashed.
    """
    defaults = defaults or {}
    changed = {k: v for k, v in identity(config).items()
               if not (v == _json_default(k) if k in FIELDS else
                       k in defaults and v == defaults[k])}
    return _hash(changed)


def legacy_fingerprint(config: ml_collections.ConfigDict) -> str:
    """The fingerprint of earlier versions, a hash of every :func:`identity` field: run and
    sweep directories named with it are still found (see :mod:`imp_jax.run.rundir`)."""
    return _hash(identity(config))


def rewind_steps(rewind: str, steps_per_epoch: int) -> int:
    """The rewind point in training steps (``"10ep"`` is 10 epochs)."""
    match = _REWIND.match(rewind)
    if match is None:
        raise ConfigError(f"config.imp.rewind: {_rewind(rewind)}, got {rewind!r}")
    n, unit = int(match.group(1)), match.group(2)
    return n * steps_per_epoch if unit == "ep" else n
