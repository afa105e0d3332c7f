"""The prune-retrain driver: levels, rewinding, checkpoints and resuming.

Level 0 trains the dense network from its initialisation; the rewind point (the initial state, or
the state after k steps) is saved once. Every later level prunes the previous level's trained
weights, rewinds the survivors, rebuilds the optimizer state and retrains. After each level one
metrics row per replicate is appended to ``metrics.jsonl``. All replicates run as one compiled
program (see ``parallel.replicate_batching``), and every level reuses the same compiled
functions (masks are inputs, not constants).

A run killed at any point resumes from its last checkpoint when started again with the same
config and run directory: finished levels are never redone and rows never duplicated.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from imp_jax import analysis, mixtures, models, parallel, train
from imp_jax import config as config_lib
from imp_jax import data as data_lib
from imp_jax import masks as masks_lib
from imp_jax import metrics as metrics_lib
from imp_jax.checkpoints import CheckpointError, Checkpoints
from imp_jax.rundir import RunDir, write_json

PyTree = Any
log = logging.getLogger(__name__)

_PRUNE_FNS: dict[str, Callable[..., PyTree]] = {
    "magnitude_global": lambda p, m, key, **kw: masks_lib.prune_global(p, m, **kw),
    "magnitude_layerwise": lambda p, m, key, **kw: masks_lib.prune_layerwise(p, m, **kw),
    "random_global": lambda p, m, key, **kw: masks_lib.prune_random_global(key, m, **kw),
    "random_layerwise": lambda p, m, key, **kw: masks_lib.prune_random_layerwise(key, m, **kw),
}
_LAYERWISE = ("magnitude_layerwise", "random_layerwise")


class TrainingDivergedError(FloatingPointError):
    """The training loss became NaN or infinite."""


class RunInterruptedError(RuntimeError):
    """SIGTERM or SIGINT stopped the run after writing a checkpoint; ``signum`` says which."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum


@contextlib.contextmanager
def _stop_on_signals(flag: list[int]):
    """Records SIGTERM/SIGINT in ``flag`` instead of dying, so the loop can checkpoint first."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handled = (signal.SIGTERM, signal.SIGINT)
    previous = {s: signal.getsignal(s) for s in handled}
    for s in handled:
        signal.signal(s, lambda signum, _frame: flag.append(signum))
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@dataclasses.dataclass(frozen=True)
class FreshSample:
    """Mixture tasks: fresh points with their exact p(y|x), clean and under the label noise."""

    x: jax.Array
    labels: jax.Array  # drawn from the clean p(y|x)
    p_true: jax.Array
    p_true_noisy: jax.Array


def fresh_sample(config: ml_collections.ConfigDict, layout: parallel.Layout) -> FreshSample:
    """``eval.fresh_points`` new points of the config's mixture task (a key of their own)."""
    c = config.data
    task = c.name.removeprefix("mixture_")
    key = jax.random.fold_in(jax.random.key(c.seed), 0xF4E5)
    x, y = mixtures.sample(key, task, c.mixture_nu, config.eval.fresh_points, c.mixture_dim)
    arrays = (x, y, mixtures.true_probs(task, c.mixture_nu, x),
              mixtures.true_probs(task, c.mixture_nu, x, c.label_noise))
    return FreshSample(*layout.put(arrays, layout.replicated))


@dataclasses.dataclass(frozen=True)
class Experiment:
    """Everything a run needs besides its state: data on device, the trainer, the pruning rule."""

    config: ml_collections.ConfigDict
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
        base = jax.random.key(self.config.seed)
        return jax.vmap(lambda r: jax.random.fold_in(base, r))(jnp.arange(self.replicates))


def build(config: ml_collections.ConfigDict) -> Experiment:
    """Validates ``config``, loads the data and builds the trainer; no training yet.

    Raises:
      imp_jax.config.ConfigError: a field is invalid (named in the message).
    """
    config_lib.validate(config)
    c = config
    try:
        dataset = data_lib.load_dataset(
            c.data.name, key=jax.random.key(c.data.seed), label_noise=c.data.label_noise,
            data_dir=c.data.data_dir or None, manual_dir=c.data.manual_dir or None,
            train_subset=c.data.train_subset, validation_size=c.data.validation_size,
            mixture_nu=c.data.mixture_nu, mixture_dim=c.data.mixture_dim,
            mixture_train=c.data.mixture_train, mixture_test=c.data.mixture_test,
            classes=c.data.classes, keep_uint8=c.data.augment,
            normalisation=c.data.normalisation)
    except (ValueError, FileNotFoundError) as e:
        raise config_lib.ConfigError(f"config.data: {e}") from e
    if c.train.batch_size > dataset.n_train:
        raise config_lib.ConfigError(
            f"config.train.batch_size: {c.train.batch_size} is larger than the training set "
            f"({dataset.n_train} examples)")
    spe = train.steps_per_epoch(dataset.n_train, c.train.batch_size)
    hyper = train.Hyper(
        batch_size=c.train.batch_size, lr=c.train.lr, momentum=c.train.momentum,
        nesterov=c.train.nesterov, weight_decay=c.train.weight_decay,
        lr_boundaries=tuple(e * spe for e in c.train.lr_decay_epochs), lr_decay=c.train.lr_decay)
    model = models.make_model(
        c.model.name, dataset.num_classes, hidden=c.model.hidden, use_bias=c.model.use_bias,
        init=c.model.init, bias_init=c.model.bias_init, bn_init=c.model.bn_init,
        width=c.model.width, blocks_per_stage=c.model.blocks_per_stage,
        growth_rate=c.model.growth_rate)
    layout = parallel.Layout.create(c.parallel.mode)
    batching = c.parallel.replicate_batching
    if batching == "auto":
        batching = "vmap" if layout.splits_replicates else train.choose_replicate_batching(
            model, dataset.x_train.shape[1:], c.train.batch_size)
    problem = layout.check(c.replicates, c.train.batch_size, batching)
    if problem:
        raise config_lib.ConfigError(problem)
    trainer = train.Trainer(model, hyper, dataset.n_train, c.train.eval_batch_size,
                            batch_sharding=layout.batch, state_sharding=layout.per_replicate,
                            normalisation=dataset.normalisation, augment=c.data.augment,
                            replicate_batching=batching)
    total_steps = c.train.epochs * spe
    rewind_step = config_lib.rewind_steps(c.imp.rewind, spe)
    if rewind_step >= total_steps:
        raise config_lib.ConfigError(
            f"config.imp.rewind: {c.imp.rewind!r} is {rewind_step} steps, not before the end of "
            f"training ({total_steps} steps)")
    spec = masks_lib.PrunableSpec(exclude=tuple(c.prune.exclude))
    params_shape = jax.eval_shape(model.init, jax.random.key(0), dataset.x_train[:1])["params"]
    try:
        spec.flags(params_shape)
    except ValueError as e:
        raise config_lib.ConfigError(f"config.prune.exclude: {e}") from e
    # Held once on device and shared by all replicates.
    x_train = layout.put(dataset.x_train, layout.replicated)
    y_train = np.broadcast_to(dataset.y_train, (c.replicates, dataset.n_train))
    fresh = fresh_sample(c, layout) if c.data.name.startswith("mixture_") else None
    return Experiment(c, dataset, trainer, spec, x_train,
                      layout.put(y_train, layout.per_replicate), total_steps, rewind_step, layout,
                      fresh)


# ---------------------------------------------------------------------------------------------
# Compiled pieces (built once per experiment, reused by every level).


# Outputs keep the state's sharding, as restored checkpoints have it: jit's cache keys on input
# shardings, so a level fed differently placed arrays would compile again.
@functools.cache
def _pruner(method: str, fraction: float, spec: masks_lib.PrunableSpec, count: str,
            sharding: jax.sharding.Sharding):
    fn = _PRUNE_FNS[method]
    return jax.jit(jax.vmap(lambda p, m, key: fn(p, m, key, fraction=fraction, spec=spec,
                                                 count=count)),
                   out_shardings=sharding)


@functools.cache
def _rewinder(trainer: train.Trainer):
    return jax.jit(jax.vmap(trainer.rewind), out_shardings=trainer.state_sharding)


@functools.cache
def _level_metrics_fn(num_bins: int):
    def one(logits_train, y_train, y_clean, corrupted, logits_test, y_test, y_test_noisy):
        wrong = jnp.argmax(logits_train, -1) != y_train
        clean = ~corrupted
        out = {
            "train_loss": metrics_lib.nll(logits_train, y_train),
            "train_error": jnp.mean(wrong),
            # Error on the examples whose label is intact, and on the relabelled ones measured
            # against their (wrong) training label: low values there mean memorisation.
            "train_error_clean_subset": jnp.sum(wrong & clean) / jnp.maximum(jnp.sum(clean), 1),
            "train_error_noisy_subset": (jnp.sum(wrong & corrupted)
                                         / jnp.maximum(jnp.sum(corrupted), 1)),
            "train_noisy_subset_true_label_acc": (
                jnp.sum((jnp.argmax(logits_train, -1) == y_clean) & corrupted)
                / jnp.maximum(jnp.sum(corrupted), 1)),
        }
        for prefix, labels in (("test_", y_test), ("test_noisy_", y_test_noisy)):
            m = metrics_lib.classification_metrics(logits_test, labels, num_bins=num_bins)
            out.update({prefix + k: v for k, v in m.items()})
        return out

    return jax.jit(jax.vmap(one, in_axes=(0, 0, None, None, 0, None, None)))


@functools.cache
def _fresh_metrics_fn(num_bins: int):
    def one(logits, labels, p_true, p_true_noisy):
        probs = jax.nn.softmax(logits)
        return {
            "true_abs_error": metrics_lib.mean_abs_prob_error(probs, p_true),
            "true_kl": metrics_lib.kl_true_model(p_true, probs),
            "true_noisy_abs_error": metrics_lib.mean_abs_prob_error(probs, p_true_noisy),
            "true_noisy_kl": metrics_lib.kl_true_model(p_true_noisy, probs),
            f"fresh_ece_{num_bins}": metrics_lib.ece(probs, labels, num_bins=num_bins),
            "fresh_error": metrics_lib.error(probs, labels),
        }

    return jax.jit(jax.vmap(one, in_axes=(0, None, None, None)))


def evaluate(exp: Experiment, state: train.TrainState) -> list[dict[str, float]]:
    """Per-replicate metrics of ``state`` on the training and test sets."""
    ds = exp.dataset
    predict = exp.trainer.predict
    args = (state.params, state.masks, state.model_state)
    shared = exp.layout.put(
        {"y_clean": ds.y_train_clean, "corrupted": ds.corrupted, "x_test": ds.x_test,
         "y_test": ds.y_test, "y_test_noisy": ds.y_test_noisy}, exp.layout.replicated)
    logits_train = predict(*args, exp.x_train)
    logits_test = predict(*args, shared["x_test"])
    values = _level_metrics_fn(exp.config.eval.num_bins)(
        logits_train, exp.y_train, shared["y_clean"], shared["corrupted"], logits_test,
        shared["y_test"], shared["y_test_noisy"])
    if ds.x_val is not None:
        x_val, y_val = exp.layout.put((ds.x_val, ds.y_val), exp.layout.replicated)
        logits_val = predict(*args, x_val)
        values["val_error"] = jax.vmap(metrics_lib.error, (0, None))(logits_val, y_val)
        values["val_loss"] = jax.vmap(metrics_lib.nll, (0, None))(logits_val, y_val)
    if exp.fresh is not None:
        values.update(_fresh_metrics_fn(exp.config.eval.num_bins)(
            predict(*args, exp.fresh.x), exp.fresh.labels, exp.fresh.p_true,
            exp.fresh.p_true_noisy))
    host = exp.layout.fetch(values)
    return [{k: float(v[r]) for k, v in host.items()} for r in range(exp.replicates)]


def weight_counts(exp: Experiment, masks: PyTree) -> list[dict[str, Any]]:
    """Per-replicate kernel-weight counts: all kernels, and the prunable ones."""
    host = exp.layout.fetch(masks)
    rows = []
    for r in range(exp.replicates):
        mask = jax.tree_util.tree_map(lambda m, r=r: np.asarray(m[r]), host)
        kernels = masks_lib.count(mask, masks_lib.PrunableSpec(min_ndim=exp.spec.min_ndim))
        prunable = masks_lib.count(mask, exp.spec)
        rows.append({
            "remaining_weights": int(kernels["remaining"]), "total_weights": kernels["total"],
            "prunable_remaining": int(prunable["remaining"]), "prunable_total": prunable["total"],
            "sparsity": 1.0 - int(kernels["remaining"]) / kernels["total"],
        })
    return rows


# ---------------------------------------------------------------------------------------------
# The driver.


@dataclasses.dataclass
class _Timer:
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)

    def add(self, name: str, start: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


def _barrier(name: str) -> None:
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


class Run:
    """One IMP run in its run directory; :meth:`run` trains, prunes and resumes."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str,
                 experiment: Experiment | None = None) -> None:
        self.exp = experiment or build(config)
        self.dir = RunDir(workdir)
        # Several hosts share the run directory: process 0 writes the files, all write the
        # Orbax checkpoints together, and barriers keep the others from reading ahead of it.
        self.primary = jax.process_index() == 0
        if self.primary:
            self.dir.claim(config)
        _barrier("claim")
        self.ckpt = Checkpoints(self.dir.checkpoints)
        keys = self.exp.replicate_keys()
        self.init_keys = keys
        self.prune_keys = jax.vmap(lambda k: jax.random.fold_in(k, 0x9E3779B))(keys)
        self.target = self.exp.layout.abstract_state(
            jax.eval_shape(lambda: self.exp.trainer.init(keys, self.exp.x_train[:1])))
        self.signals: list[int] = []
        # Replicates skipped after diverging (train.on_divergence="skip_replicate").
        self.diverged = np.zeros(self.exp.replicates, bool)

    # -- what has been done --------------------------------------------------------------------

    def restore_level(self, level: int) -> train.TrainState:
        """The trained state (all replicates) at the end of a finished ``level``."""
        state, _ = Checkpoints.restore(self.ckpt.levels, level, self.target)
        return state

    def probabilities(self, state: train.TrainState, x: np.ndarray) -> np.ndarray:
        """Predicted class probabilities of every replicate of ``state``: (replicates, n, K)."""
        layout = self.exp.layout
        logits = self.exp.trainer.predict(state.params, state.masks, state.model_state,
                                          layout.put(np.asarray(x, np.float32), layout.replicated))
        return layout.fetch(jax.nn.softmax(logits))

    def finished_levels(self) -> list[int]:
        return sorted(self.ckpt.levels.all_steps())

    def _rows_by_level(self) -> dict[int, list[dict[str, Any]]]:
        rows: dict[int, list[dict[str, Any]]] = {}
        for row in self.dir.read_rows():
            rows.setdefault(row["level"], []).append(row)
        return rows

    def _stop_reason(self, level: int, masks: PyTree) -> str | None:
        """Why no level after ``level`` should run, or None."""
        c = self.exp.config
        if level >= c.imp.levels:
            return f"reached imp.levels={c.imp.levels}"
        mask = jax.tree_util.tree_map(lambda m: np.asarray(m[0]), self.exp.layout.fetch(masks))
        n, prunable = map(int, masks_lib.num_to_prune(
            mask, c.prune.fraction, self.exp.spec, c.prune.count,
            layerwise=c.prune.method in _LAYERWISE))
        if n > prunable:
            return (f"the next level would prune {n} weights (prune.count={c.prune.count!r}) "
                    f"and only {prunable} prunable weights remain")
        if prunable - n < max(c.imp.min_weights, 1):
            return (f"the next level would keep {prunable - n} prunable weights, fewer than "
                    f"imp.min_weights={c.imp.min_weights}" if c.imp.min_weights else
                    "no prunable weight would remain")
        return None

    # -- the loop ------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Runs (or resumes) every level; returns the summary.

        Raises:
          RunInterruptedError: SIGTERM/SIGINT arrived; a checkpoint was written first.
          TrainingDivergedError: a loss became NaN/inf (all replicates, with "skip_replicate").
        """
        with _stop_on_signals(self.signals):
            return self._run()

    def _run(self) -> dict[str, Any]:
        exp = self.exp
        log.info("%d replicate(s) on %d device(s), parallel.mode=%s, replicate_batching=%s",
                 exp.replicates, exp.layout.size, exp.layout.mode,
                 exp.trainer.replicate_batching)
        done = self.finished_levels()
        rows = self._rows_by_level()
        for level_rows in rows.values():
            for row in level_rows:
                self.diverged[row["replicate"]] |= bool(row.get("diverged", False))
        for level in done:  # a kill between a level's checkpoint and its rows, or a torn write
            if len(rows.get(level, [])) < self.exp.replicates:
                self._record(level, self.restore_level(level), {}, resumed=True)
        if done:
            last_state = self.restore_level(done[-1])
            reason = self._stop_reason(done[-1], last_state.masks)
            if reason:
                log.info("run in %s is finished (%s): %d levels", self.dir.root, reason,
                         len(done))
                return self._summarise(finished=True)
        level = done[-1] + 1 if done else 0
        while True:
            timer = _Timer()
            state = self._level_start(level, last_state if done else None, timer)
            state = self._train_level(level, state, timer)
            start = time.perf_counter()
            Checkpoints.save(self.ckpt.levels, level, state, {"level": level})
            timer.add("checkpoint", start)
            self._record(level, state, timer.seconds)
            done, last_state = [*done, level], state
            reason = self._stop_reason(level, state.masks)
            if reason:
                log.info("stopping: %s", reason)
                return self._summarise(finished=True)
            level += 1

    def _level_start(self, level: int, previous: train.TrainState | None,
                     timer: _Timer) -> train.TrainState:
        """The state a level starts from: in-level progress if any, else rewound and pruned."""
        latest = self.ckpt.progress.latest_step()
        if latest is not None:
            try:
                state, meta = Checkpoints.restore(self.ckpt.progress, latest, self.target)
            except CheckpointError as e:
                # Progress is only a shortcut and training is deterministic: redo the level from
                # its start. Deleting the bad one keeps it from blocking a save at that index.
                log.warning("%s; restarting level %d from its beginning", e, level)
                self.ckpt.progress.delete(latest)
            else:
                if meta["level"] == level:
                    log.info("level %d: resuming at step %d", level, meta["step"])
                    return state
        if level == 0:
            state = self.exp.layout.put_state(
                self.exp.trainer.init(self.init_keys, self.exp.x_train[:1]))
            if self.exp.rewind_step == 0:
                Checkpoints.save(self.ckpt.rewind, 0, state, {"step": 0})
            return state
        start = time.perf_counter()
        c = self.exp.config.prune
        keys = jax.vmap(lambda k: jax.random.fold_in(k, level))(self.prune_keys)
        masks = _pruner(c.method, c.fraction, self.exp.spec, c.count,
                        self.exp.layout.per_replicate)(
            previous.params, previous.masks, keys)
        if self.exp.config.imp.reinit:
            # Control: the ticket's mask on a fresh random initialisation, trained from step 0.
            keys = jax.vmap(lambda k: jax.random.fold_in(k, level))(self.init_keys)
            point = self.exp.layout.put_state(self.exp.trainer.init(keys, self.exp.x_train[:1]))
        else:
            point, _ = Checkpoints.restore(self.ckpt.rewind, self.exp.rewind_step, self.target)
        state = _rewinder(self.exp.trainer)(point, masks)
        jax.block_until_ready(state)
        timer.add("prune", start)
        return state

    def _train_level(self, level: int, state: train.TrainState,
                     timer: _Timer) -> train.TrainState:
        exp, c = self.exp, self.exp.config
        spe = exp.trainer.steps_per_epoch
        step = int(exp.layout.fetch(state.step)[0])
        rng = exp.layout.fetch(state.rng)
        start = time.perf_counter()
        last_log = start
        while step < exp.total_steps:
            epoch, lo = divmod(step, spe)
            hi = spe
            if level == 0 and step < exp.rewind_step < (epoch + 1) * spe:
                hi = exp.rewind_step - epoch * spe  # stop at the rewind point to save it
            order = exp.layout.put(exp.trainer.epoch_order(rng, epoch), exp.layout.per_replicate)
            state, stats = exp.trainer.run_steps(state, exp.x_train, exp.y_train, order, lo, hi)
            step = epoch * spe + hi
            self._check_divergence(level, stats)
            t0 = time.perf_counter()
            if level == 0 and step == exp.rewind_step:
                Checkpoints.save(self.ckpt.rewind, step, state, {"step": step})
            epochs_done = step // spe
            at_epoch_end = step % spe == 0
            every = c.checkpoint.every_epochs
            periodic = at_epoch_end and every and epochs_done % every == 0
            # One look at the signals: one that arrives during the save below waits for the next
            # chunk, rather than saving this step a second time (which Orbax refuses).
            stopping = bool(self.signals) and step < exp.total_steps
            if (periodic or stopping) and step < exp.total_steps:
                Checkpoints.save(self.ckpt.progress, level * (exp.total_steps + 1) + step, state,
                                 {"level": level, "step": step})
            if stopping:
                raise RunInterruptedError(
                    f"stopped by signal {self.signals[0]} at level {level}, step {step}; a "
                    f"checkpoint is written: run the same command again to resume",
                    self.signals[0])
            timer.add("checkpoint", t0)
            if (at_epoch_end and c.log.every_epochs and epochs_done % c.log.every_epochs == 0
                    and epochs_done < c.train.epochs):
                now = time.perf_counter()
                log.info("level %d epoch %d/%d loss %.4f (%.3f s/epoch)", level, epochs_done,
                         c.train.epochs, float(np.nanmean(stats["loss"])),
                         (now - last_log) / c.log.every_epochs)
                last_log = now
        timer.add("train", start)
        timer.seconds["train"] -= timer.seconds.get("checkpoint", 0.0)
        return state

    def _check_divergence(self, level: int, stats: dict[str, jax.Array]) -> None:
        """Stops on a NaN/inf loss, or with "skip_replicate" marks the replicate as skipped."""
        first_bad = np.asarray(stats["first_nonfinite_step"])
        bad = first_bad >= 0
        if not bad.any():
            return
        where = ", ".join(f"replicate {r} at step {first_bad[r]}" for r in np.flatnonzero(bad))
        skip = self.exp.config.train.on_divergence == "skip_replicate"
        if not skip or (bad | self.diverged).all():
            raise TrainingDivergedError(
                f"level {level}: the training loss became NaN or infinite ({where}); finished "
                f"levels are kept in {self.dir.root}"
                + ("" if skip else "; train.on_divergence=skip_replicate would skip it"))
        new = bad & ~self.diverged
        if new.any():
            log.warning("level %d: skipping diverged replicate(s): %s", level, where)
        self.diverged |= bad

    def _record(self, level: int, state: train.TrainState, seconds: dict[str, float],
                resumed: bool = False) -> None:
        """Evaluates ``state`` and appends the rows of the replicates that have none at ``level``.

        Some already have one after a torn append (only its cut last line was dropped), and all of
        them when a level is retrained after its unreadable checkpoint was deleted (training is
        deterministic, so the rows kept are the ones it would write).
        """
        have = {row["replicate"] for row in self.dir.read_rows() if row["level"] == level}
        replicates = [r for r in range(self.exp.replicates) if r not in have]
        if not replicates:
            return
        start = time.perf_counter()
        values = evaluate(self.exp, state)
        counts = weight_counts(self.exp, state.masks)
        eval_s = time.perf_counter() - start
        rows = []
        for r in replicates:
            row = {"level": level, "replicate": r, **counts[r], **values[r],
                   "epochs": self.exp.config.train.epochs, "diverged": bool(self.diverged[r]),
                   "time_eval_s": eval_s}
            if not resumed:
                row.update({f"time_{k}_s": v for k, v in seconds.items()})
            rows.append(row)
        if self.primary:
            self.dir.append_rows(rows)
        _barrier(f"rows {level}")
        m = rows[0]
        log.info("level %2d | weights %d/%d (%.2f%%) | train err %.4f | test err %.4f "
                 "| test ECE %.4f | %.1f s", level, m["remaining_weights"], m["total_weights"],
                 100 * (1 - m["sparsity"]), np.mean([x["train_error"] for x in rows]),
                 np.mean([x["test_error"] for x in rows]),
                 np.mean([x[f"test_ece_{self.exp.config.eval.num_bins}"] for x in rows]),
                 sum(seconds.values()) + eval_s)
        self._summarise(finished=False)

    def _summarise(self, finished: bool) -> dict[str, Any]:
        """Writes summary.json (see :func:`imp_jax.analysis.summarise`) and returns it."""
        summary = analysis.summarise(self.dir.read_rows(),
                                     num_bins=self.exp.config.eval.num_bins, finished=finished)
        if self.primary:
            write_json(self.dir.summary, summary)
        return summary


def open_run(workdir: str) -> Run:
    """The :class:`Run` of an existing run directory, built from its ``config.json``."""
    rundir = RunDir(workdir)
    if not rundir.config.exists():
        raise FileNotFoundError(f"{rundir.root} has no config.json: not an imp_jax run directory")
    return Run(config_lib.from_json_dict(json.loads(rundir.config.read_text())), workdir)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Validates ``config``, then runs or resumes the run in ``workdir``; returns the summary."""
    runner = Run(config, workdir)
    try:
        return runner.run()
    finally:
        runner.ckpt.close()
