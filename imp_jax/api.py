"""IMP on your own Flax model, arrays and optax optimizer, from Python.

:func:`run_imp` registers the model, the arrays and the optimizer by name (see
:func:`imp_jax.core.models.register_model`, :func:`imp_jax.data.tasks.register_arrays`,
:func:`imp_jax.core.optimizers.register_optimizer`) and runs the driver the command line runs, in a
run directory of its own: levels are checkpointed with Orbax, a second call resumes an
interrupted run or returns the finished one, and every row of ``metrics.jsonl`` comes back.

    import optax
    from imp_jax import api

    result = api.run_imp(MyModule(), (x_train, y_train, x_test, y_test), "runs/mine",
                         optimizer=optax.adam(1e-3), **{"train.epochs": 20, "imp.levels": 10,
                                                        "data.label_noise": 0.2})
    result.best_level, result.rows[-1]["test_error"], result.best_params()

The names it registers (``name``, by default ``"custom"``) are part of the run's config: call
it with another name for another model or dataset in the same process. The run directory's
identity check sees the names, not the module's code: use a new ``workdir`` after changing the
model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import numpy as np
import optax

from imp_jax.core import models, optimizers
from imp_jax.core.records import LevelRow, RunSummary
from imp_jax.data import tasks
from imp_jax.run import config as config_lib
from imp_jax.run import driver
from imp_jax.run.rundir import RunDir, read_json

PyTree = Any


@dataclasses.dataclass(frozen=True)
class ImpResult:
    """A run of :func:`run_imp`: its rows (one per replicate and level), its summary
    (``summary.json``: the best pruned level, the effective parameters, dense vs best
    metrics) and its directory."""

    rows: list[LevelRow]
    summary: RunSummary
    workdir: str

    @property
    def best_level(self) -> int | None:
        """The best pruned level (the minimum of the second descent), or None."""
        return self.summary.best_level

    def params(self, level: int) -> PyTree:
        """The trained params of every replicate at the end of ``level`` (leading axis: the
        replicates), pruned weights exactly zero."""
        with driver.open_run(self.workdir) as run:
            return run.restore_level(level).params

    def best_params(self) -> PyTree:
        """:meth:`params` of the best pruned level; ValueError while there is none."""
        if self.best_level is None:
            raise ValueError("the run has no best pruned model (yet): prune further, or read "
                             "params(level)")
        return self.params(self.best_level)


def run_imp(model: nn.Module, arrays: Sequence[np.ndarray], workdir: str, *,
            optimizer: optax.GradientTransformation | None = None, name: str = "custom",
            **fields: Any) -> ImpResult:
    """Runs (or resumes) IMP on ``model`` and ``arrays`` in ``workdir``.

    Args:
      model: a Flax linen module whose ``__call__(x, train=False, valid=None)`` returns logits
        (``train``/``valid`` may be ignored; ``valid`` marks a partial batch's real examples
        for BatchNorm statistics).
      arrays: ``(x_train, y_train, x_test, y_test)``, inputs as the model takes them and
        integer labels from 0.
      workdir: the run directory.
      optimizer: any optax optimizer (its learning rate and schedule included, applied as
        they are); None: SGD as ``train.*`` configures it.
      name: the name the model, data and optimizer are registered under.
      **fields: config fields by dotted name (``{"imp.levels": 10}``; see
        :data:`imp_jax.run.config.FIELDS`), checked before any work.

    Raises:
      imp_jax.run.config.ConfigError: a bad field, naming it.
    """
    models.register_model(name, lambda num_classes, **_: model)
    tasks.register_arrays(name, *arrays)
    config = config_lib.base_config()
    config.name = name
    config.data.name = config.model.name = name
    if optimizer is not None:
        # The driver applies ``lr * direction`` with a rate from its schedule; the optimizer's
        # own update already carries its rate and sign, so the direction is its negation at
        # a constant rate 1.
        optimizers.register_optimizer(name, lambda _: optax.chain(optimizer, optax.scale(-1.0)))
        config.train.optimizer, config.train.lr, config.train.schedule = name, 1.0, "step"
    for key, value in fields.items():
        config_lib.set_field(config, key, value)
    summary = driver.run(config, workdir) or read_json(RunDir(workdir).summary)
    return ImpResult(RunDir(workdir).read_rows(), RunSummary.from_json(summary), workdir)
