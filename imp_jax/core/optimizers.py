"""Optimizers and learning-rate schedules by name (``config.train.optimizer``,
``config.train.schedule``), built with optax, and the registries a user adds their own to.

An optimizer here is the *direction* of an update: an optax transformation without the learning
rate, which the train step applies from the schedule at the global step (so that a rewind to
step k resumes the schedule at k although the optimizer state is rebuilt). The driver wraps it
in :func:`imp_jax.masks.masked_optimizer`, so no optimizer revives a pruned weight.

    from imp_jax.core import optimizers
    optimizers.register_optimizer("lion", lambda hp: optax.scale_by_lion())
    # then --config.train.optimizer=lion
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import optax


class Settings(Protocol):
    """What the builders read (:class:`imp_jax.core.train.Hyper` has it all)."""

    lr: float
    momentum: float
    nesterov: bool
    weight_decay: float
    lr_boundaries: tuple[int, ...]
    lr_decay: float
    total_steps: int
    warmup_steps: int


Optimizer = Callable[[Settings], optax.GradientTransformation]
Schedule = Callable[[Settings], optax.Schedule]


def _sgd(hp: Settings) -> optax.GradientTransformation:
    # L2 added to the gradient before momentum: PyTorch's SGD, the reference code's optimizer.
    return optax.chain(optax.add_decayed_weights(hp.weight_decay),
                       optax.trace(decay=hp.momentum, nesterov=hp.nesterov))


def _adam(hp: Settings) -> optax.GradientTransformation:
    # PyTorch's Adam: L2 added to the gradient.
    return optax.chain(optax.add_decayed_weights(hp.weight_decay), optax.scale_by_adam())


def _adamw(hp: Settings) -> optax.GradientTransformation:
    # Decoupled weight decay, scaled by the learning rate with the rest (optax.adamw).
    return optax.chain(optax.scale_by_adam(), optax.add_decayed_weights(hp.weight_decay))


OPTIMIZERS: dict[str, Optimizer] = {"sgd": _sgd, "momentum": _sgd, "adam": _adam,
                                    "adamw": _adamw}
SCHEDULES: dict[str, Schedule] = {
    "step": lambda hp: optax.piecewise_constant_schedule(
        hp.lr, {int(b): hp.lr_decay for b in hp.lr_boundaries}),
    "cosine": lambda hp: optax.cosine_decay_schedule(hp.lr, max(hp.total_steps, 1)),
    "warmup_cosine": lambda hp: optax.warmup_cosine_decay_schedule(
        0.0, hp.lr, hp.warmup_steps, max(hp.total_steps, hp.warmup_steps + 1)),
}


def register_optimizer(name: str, build: Optimizer) -> None:
    """Makes ``name`` a valid ``train.optimizer``: ``build(hyper)`` returns the update direction
    (an optax transformation without the learning rate)."""
    OPTIMIZERS[name] = build


def register_schedule(name: str, build: Schedule) -> None:
    """Makes ``name`` a valid ``train.schedule``: ``build(hyper)`` returns the learning rate as
    a function of the global step."""
    SCHEDULES[name] = build
