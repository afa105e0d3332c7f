"""Building an experiment from a config: the data on device, the model, the trainer, the pruning
rule; everything a run needs besides its state.

:func:`build` validates the config and makes every check that needs the data or the model, so
that a bad value stops the run before anything is written or trained.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from imp_jax import masks as masks_lib
from imp_jax.core import models, parallel, train
from imp_jax.data import datasets as data_lib
from imp_jax.data import tasks
from imp_jax.run import config as config_lib
from imp_jax.run.config import ConfigError


@dataclasses.dataclass(frozen=True)
class FreshSample:
    """Mixture tasks: fresh points with their exact p(y|x), clean and under the label noise."""

    x: jax.Array
    labels: jax.Array  # drawn from the clean p(y|x)
    p_true: jax.Array
    p_true_noisy: jax.Array


def fresh_sample(config: ml_collections.ConfigDict, task: tasks.Task,
                 layout: parallel.Layout) -> FreshSample:
    """``eval.fresh_points`` new points of the mixture ``task`` (a key of their own)."""
    c = config.data
    key = jax.random.fold_in(jax.random.key(c.seed), 0xF4E5)
    x, y = task.sample(key, c.mixture_nu, config.eval.fresh_points, c.mixture_dim)
    arrays = (x, y, task.true_probs(c.mixture_nu, x),
              task.true_probs(c.mixture_nu, x, c.label_noise))
    return FreshSample(*layout.put(arrays, layout.replicated))


@dataclasses.dataclass(frozen=True)
class Experiment:
    """Everything a run needs besides its state: data on device, the trainer, the pruning rule."""

    config: ml_collections.ConfigDict
    task: tasks.Task  # config.data.name's, resolved once here
    dataset: data_lib.Dataset
    trainer: train.Trainer
    spec: masks_lib.PrunableSpec
    x_train: jax.Array
    y_train: jax.Array  # (replicates, n_train)
    total_steps: int
    rewind_step: int
    layout: parallel.Layout
    fresh: FreshSample | None = None

    @property
    def replicates(self) -> int:
        return self.config.replicates

    def replicate_keys(self) -> jax.Array:
        """One key per replicate: ``fold_in(key(seed), r)``."""
        base = jax.random.key(self.config.seed)
        return jax.vmap(lambda r: jax.random.fold_in(base, r))(jnp.arange(self.replicates))

    def initial_state(self, keys: jax.Array | None = None) -> train.TrainState:
        """Every replicate's freshly initialised state, on device (from ``keys``, default
        :meth:`replicate_keys`)."""
        keys = self.replicate_keys() if keys is None else keys
        return self.layout.put_state(self.trainer.init(keys, self.x_train[:1]))

    def abstract_state(self) -> train.TrainState:
        """The shapes, dtypes and shardings of :meth:`initial_state`, which restores target."""
        return self.layout.abstract_state(jax.eval_shape(
            lambda: self.trainer.init(self.replicate_keys(), self.x_train[:1])))


def load_data(config: ml_collections.ConfigDict, task: tasks.Task) -> data_lib.Dataset:
    """The dataset of ``task`` as ``config.data`` sets it up (ConfigError naming the section
    when it cannot load)."""
    c = config.data
    try:
        return data_lib.load_dataset(
            task, key=jax.random.key(c.seed), label_noise=c.label_noise,
            data_dir=c.data_dir or None, manual_dir=c.manual_dir or None,
            train_subset=c.train_subset, validation_size=c.validation_size,
            mixture_nu=c.mixture_nu, mixture_dim=c.mixture_dim, mixture_train=c.mixture_train,
            mixture_test=c.mixture_test, classes=c.classes, keep_uint8=c.augment,
            normalisation=c.normalisation)
    except (ValueError, FileNotFoundError) as e:
        raise ConfigError(f"config.data: {e}") from e
    except OSError as e:  # an unwritable data_dir, for one
        raise ConfigError(f"config.data: cannot read or write the dataset's files ({e}); check "
                          f"data.data_dir and data.manual_dir") from e


def make_trainer(config: ml_collections.ConfigDict, dataset: data_lib.Dataset,
                 layout: parallel.Layout) -> train.Trainer:
    """The model (``config.model``) and its trainer (``config.train``) on ``layout``."""
    c = config
    if c.train.batch_size > dataset.n_train:
        raise ConfigError(
            f"config.train.batch_size: {c.train.batch_size} is larger than the training set "
            f"({dataset.n_train} examples)")
    spe = train.steps_per_epoch(dataset.n_train, c.train.batch_size)
    hyper = train.Hyper(
        batch_size=c.train.batch_size, lr=c.train.lr, momentum=c.train.momentum,
        nesterov=c.train.nesterov, weight_decay=c.train.weight_decay,
        lr_boundaries=tuple(e * spe for e in c.train.lr_decay_epochs), lr_decay=c.train.lr_decay,
        optimizer=c.train.optimizer, schedule=c.train.schedule,
        total_steps=c.train.epochs * spe, warmup_steps=c.train.warmup_epochs * spe)
    model = models.make_model(num_classes=dataset.num_classes, **c.model)
    batching = c.parallel.replicate_batching
    if batching == "auto":
        batching = "vmap" if layout.splits_replicates else train.choose_replicate_batching(
            model, dataset.x_train.shape[1:], c.train.batch_size, replicates=c.replicates)
    problem = layout.check(c.replicates, c.train.batch_size, batching)
    if problem:
        raise ConfigError(problem)
    return train.Trainer(model, hyper, dataset.n_train, c.train.eval_batch_size,
                         batch_sharding=layout.batch, state_sharding=layout.per_replicate,
                         normalisation=dataset.normalisation, augment=c.data.augment,
                         replicate_batching=batching)


def prunable_spec(config: ml_collections.ConfigDict, trainer: train.Trainer,
                  sample_x: np.ndarray) -> masks_lib.PrunableSpec:
    """The leaves ``config.prune.exclude`` leaves prunable; ConfigError unless some are."""
    spec = masks_lib.PrunableSpec(exclude=tuple(config.prune.exclude))
    params = jax.eval_shape(trainer.model.init, jax.random.key(0), sample_x[:1])["params"]
    try:
        flags = spec.flags(params)
    except ValueError as e:
        raise ConfigError(f"config.prune.exclude: {e}") from e
    if not any(flags):
        raise ConfigError(f"config.prune.exclude: {tuple(config.prune.exclude)!r} excludes "
                          f"every prunable leaf ({masks_lib.PrunableSpec().paths(params)}); "
                          f"nothing could be pruned")
    return spec


def build(config: ml_collections.ConfigDict) -> Experiment:
    """Validates ``config``, loads the data and builds the trainer; no training yet.

    Raises:
      imp_jax.run.config.ConfigError: a field is invalid (named in the message).
    """
    config_lib.validate(config)
    c = config
    task = tasks.get(c.data.name)
    dataset = load_data(c, task)
    layout = parallel.Layout.create(c.parallel.mode)
    trainer = make_trainer(c, dataset, layout)
    total_steps = c.train.epochs * trainer.steps_per_epoch
    rewind_step = config_lib.rewind_steps(c.imp.rewind, trainer.steps_per_epoch)
    if rewind_step >= total_steps:
        raise ConfigError(
            f"config.imp.rewind: {c.imp.rewind!r} is {rewind_step} steps, not before the end of "
            f"training ({total_steps} steps)")
    spec = prunable_spec(c, trainer, dataset.x_train)
    # Held once on device and shared by all replicates.
    x_train = layout.put(dataset.x_train, layout.replicated)
    y_train = np.broadcast_to(dataset.y_train, (c.replicates, dataset.n_train))
    fresh = fresh_sample(c, task, layout) if task.is_mixture else None
    return Experiment(c, task, dataset, trainer, spec, x_train,
                      layout.put(y_train, layout.per_replicate), total_steps, rewind_step, layout,
                      fresh)
