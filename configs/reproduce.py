"""The study's runs at each scale of ``python -m experiments.reproduce``: which sweeps, and cut how.

Every scale runs the same sweeps (CIFAR-10 only at ``full``); a sweep at a reduced scale is its
config's own variant (``configs/NAME.py:smoke`` or ``:cpu``) with the fields below changed. The
report compares each sweep with its ``full`` settings and prints the difference on every table
it feeds, so the cuts are stated where the numbers are.

* ``smoke`` (about two minutes; the end-to-end test): P in {50, 300} of both MNIST networks with
  the sweeps' smoke variants (2 000 training examples, 2 epochs, 2 levels, 2 replicates) and the
  mixture nu sweeps' smoke variants (two nu each, P=20, 20 epochs, 3 levels).
* ``cpu`` (about 90 minutes on 2 CPU cores with ``--launcher=local --workers=2``; every claim
  decided): every path stops one level past its best pruned model (``imp.stop_after_minimum``:
  the level that confirms it) rather than at a fixed floor.
  - Claims 1, 2 and 5: the two-layer MNIST network at P in {50, 100, 300}, the three-layer one
    at P in {50, 300}, with 10 000 training examples, 60 epochs a level, 2 replicates and a
    36% grid (every other level of the study's 20% one: counts are compared within two of its
    levels); the two-layer network prunes its output layer too (with 10 000 examples its
    sparse minimum lies below the 10 P weights of a kept output layer). A three-layer P=1000
    path to its minimum would take about an hour here.
  - Claim 4: linear nu=0.2 and XOR nu=0.6 at the paper's own schedule (P=500, 1000 epochs of
    batch 1024, 3 replicates, 100 000 fresh points), on the 36% grid, so the full network
    memorises as in the paper.
  - Claim 3: linear at nu 0.7 and 1.0, XOR at nu 1.0, on the study's 20% grid (the ratio of
    the effective parameters at nu=1.0 is judged within the grid's step), at P=200 and 100
    epochs of batch 128 (about the study's number of SGD steps at an eighth of the compute),
    3 replicates. An easy task's path runs about 25 levels to its minimum: each further nu
    costs about 15 minutes.
* ``full``: the study's settings (3 replicates of MNIST at 120 epochs a level and every width,
  5 of each mixture at 1000 epochs, CIFAR-10's ResNet at 160 epochs).
"""

from __future__ import annotations

from types import ModuleType

import ml_collections

from configs import cifar10_noise, mixture_nu, mixture_xor_nu, mnist3_widths, mnist_widths, variants
from imp_jax.study import sweep
from imp_jax.study.reproduce import StudySweep

SCALES = ("smoke", "cpu", "full")
# A best pruned model is named once a later level is worse by more than the tolerance: one level
# past it confirms it.
STOP = {"imp.stop_after_minimum": 1}
# Every other level of the study's 20% grid: counts are compared within two of its levels.
MNIST_CPU = {"data.train_subset": 10_000, "prune.fraction": 0.36, **STOP}
# The two-layer network prunes its output layer too (see the module docstring).
MNIST2_CPU = {**MNIST_CPU, "sweep.width": (50, 100, 300), "prune.exclude": ()}
MNIST3_CPU = {**MNIST_CPU, "sweep.width": (50, 300)}
# Claim 4's setting at the paper's schedule; claim 3's nu (>= 0.7) on the 20% grid, cheaper.
CLAIM3 = {"model.hidden": (200,), "train.epochs": 100, "train.batch_size": 128,
          "prune.fraction": 0.2, "eval.fresh_points": 20_000}
MIXTURE_CPU = {**STOP, "replicates": 3, "model.hidden": (500,), "train.epochs": 1000,
               "train.batch_size": 1024, "prune.fraction": 0.36, "eval.fresh_points": 100_000,
               "checkpoint.every_epochs": 100,
               "sweep.overrides": tuple(("nu>=0.7", k, v) for k, v in CLAIM3.items())}
# (directory, config module, the claims it feeds, {scale: fields on top of its variant}).
SWEEPS: tuple[tuple[str, ModuleType, tuple[str, ...], dict[str, dict]], ...] = (
    # The longest points first, so that workers sharing the study finish together.
    ("mixture_nu", mixture_nu, ("mixtures", "uncertainty"),
     {"smoke": {}, "cpu": {**MIXTURE_CPU, "sweep.nu": (0.2, 0.7, 1.0)}}),
    ("mixture_xor_nu", mixture_xor_nu, ("mixtures", "uncertainty"),
     {"smoke": {}, "cpu": {**MIXTURE_CPU, "sweep.nu": (0.6, 1.0)}}),
    ("mnist3_widths", mnist3_widths, ("widths",),
     {"smoke": {"sweep.width": (50, 300)}, "cpu": MNIST3_CPU}),
    ("mnist_widths", mnist_widths, ("sdd", "widths", "calibration"),
     {"smoke": {"sweep.width": (50, 300)}, "cpu": MNIST2_CPU}),
    ("cifar10", cifar10_noise, ("calibration",), {}),  # at the full scale only
)


def _cifar10() -> ml_collections.ConfigDict:
    """The CIFAR-10 run as a sweep of one point: the ResNet-20 at W=80, the width of the
    reference code's README command (``cifar_resnet_20_80``, 160 epochs, rewinding to epoch 10,
    in viplovearora/noisy_lottery_tickets)."""
    c = sweep.with_sweep(cifar10_noise.get_config())
    c.sweep.width = (80,)
    return c


def _full(module: ModuleType) -> ml_collections.ConfigDict:
    return _cifar10() if module is cifar10_noise else module.get_config()


def plan(scale: str, data: dict[str, dict[str, str]] | None = None) -> list[StudySweep]:
    """The sweeps of ``scale``; ``data`` maps a dataset name to fields that do not change
    results, set in the sweeps of that dataset (e.g. ``{"mnist": {"data.manual_dir": DIR}}``).
    A sweep not run at this scale is left out."""
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; expected {' or '.join(SCALES)}")
    out = []
    for key, module, claims, cuts in SWEEPS:
        if scale != "full" and scale not in cuts:
            continue
        config = (_full(module) if scale == "full" else
                  variants.apply(module.get_config(scale), cuts[scale]))
        variants.apply(config, (data or {}).get(config.data.name, {}))
        out.append(StudySweep(key, config, _full(module), claims))
    return out
