"""The study's runs at each scale of ``python -m experiments.reproduce``: which sweeps, and cut how.

Every scale runs the same sweeps (CIFAR-10 only at ``full``); a sweep at a reduced scale is its
config's own variant (``configs/NAME.py:smoke`` or ``:cpu``) with the fields below changed. The
report compares each sweep with its ``full`` settings and prints the difference on every table
it feeds, so the cuts are stated where the numbers are.

* ``smoke`` (about two minutes; the end-to-end test): P in {50, 300} of both MNIST networks with
  the sweeps' smoke variants (2 000 training examples, 2 epochs, 2 levels, 2 replicates) and the
  mixture nu sweeps' smoke variants (two nu each, P=20, 20 epochs, 3 levels).
* ``cpu`` (about an hour on 2 CPU cores): the MNIST networks with 10 000 training examples, 60
  epochs a level, 2 replicates and the study's 20% pruned per level; the two-layer network at P
  in {50, 100, 300} with its output layer pruned too (with 10 000 examples its sparse minimum
  lies below the 10 P weights of a kept output layer, where its path would stop), the
  three-layer one at P in {50, 100, 300, 1000}; P >= 2000 and the two-layer P=1000 are left out
  (a two-layer P=1000 path to its minimum alone takes about an hour here); the mixture nu
  sweeps' cpu variants (every nu, P=200, 100 epochs of batch 128, 2 replicates, 36% pruned per
  level).
* ``full``: the study's settings (3 replicates of MNIST at 120 epochs a level and every width,
  5 of each mixture at 1000 epochs, CIFAR-10's ResNet at 160 epochs).
"""

from __future__ import annotations

from types import ModuleType

import ml_collections

from configs import cifar10_noise, mixture_nu, mixture_xor_nu, mnist3_widths, mnist_widths, variants
from imp_jax import sweep
from imp_jax.reproduce import StudySweep

SCALES = ("smoke", "cpu", "full")
MNIST_CPU = {"data.train_subset": 10_000, "prune.fraction": 0.2}
# The two-layer network prunes its output layer too (see the module docstring).
MNIST2_CPU = {**MNIST_CPU, "sweep.width": (50, 100, 300), "prune.exclude": ()}
MNIST3_CPU = {**MNIST_CPU, "sweep.width": (50, 100, 300, 1000)}
# (directory, config module, the claims it feeds, {scale: fields on top of its variant}).
SWEEPS: tuple[tuple[str, ModuleType, tuple[str, ...], dict[str, dict]], ...] = (
    ("mnist_widths", mnist_widths, ("sdd", "widths", "calibration"),
     {"smoke": {"sweep.width": (50, 300)}, "cpu": MNIST2_CPU}),
    ("mnist3_widths", mnist3_widths, ("widths",),
     {"smoke": {"sweep.width": (50, 300)}, "cpu": MNIST3_CPU}),
    ("mixture_nu", mixture_nu, ("mixtures", "uncertainty"), {"smoke": {}, "cpu": {}}),
    ("mixture_xor_nu", mixture_xor_nu, ("mixtures", "uncertainty"), {"smoke": {}, "cpu": {}}),
    ("cifar10", cifar10_noise, ("calibration",), {}),  # at the full scale only
)


def _cifar10() -> ml_collections.ConfigDict:
    """The CIFAR-10 run as a sweep of one point (its ResNet's width 16)."""
    c = sweep.with_sweep(cifar10_noise.get_config())
    c.sweep.width = (16,)
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


def planned_claims() -> dict[str, tuple[str, ...]]:
    """Every sweep's claims, at whatever scale (for the rows of sweeps a scale leaves out)."""
    return {key: claims for key, _, claims, _ in SWEEPS}
