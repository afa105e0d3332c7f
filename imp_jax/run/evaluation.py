"""Evaluating a trained state: the metrics of every replicate on the training set, the test set
(clean and noisy labels), the validation split and, for mixtures, fresh points against the
exact p(y|x); and counting its kernel weights.

The metrics are pure functions of logits (:mod:`imp_jax.core.metrics`), vmapped over replicates and
jitted once per bin count.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from imp_jax import masks as masks_lib
from imp_jax.core import metrics as metrics_lib
from imp_jax.core import train
from imp_jax.run.experiment import Experiment

PyTree = Any
# The quantile of the fresh points' |p - p*| reported beside its maximum.
TRUE_QUANTILE = 0.99


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
        distance = metrics_lib.abs_prob_errors(probs, p_true)
        return {
            "true_abs_error": jnp.mean(distance),
            # The study's Fig. 5c shows the largest |p - p*| (its colour bars); the 99th
            # percentile beside it depends less on the sample's few extreme points.
            "true_abs_error_max": jnp.max(distance),
            f"true_abs_error_q{int(TRUE_QUANTILE * 100)}": jnp.quantile(distance, TRUE_QUANTILE),
            "true_kl": metrics_lib.kl_true_model(p_true, probs),
            "true_noisy_abs_error": metrics_lib.mean_abs_prob_error(probs, p_true_noisy),
            "true_noisy_kl": metrics_lib.kl_true_model(p_true_noisy, probs),
            f"fresh_ece_{num_bins}": metrics_lib.ece(probs, labels, num_bins=num_bins),
            "fresh_overconfidence": metrics_lib.overconfidence(probs, labels),
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


def probabilities(exp: Experiment, state: train.TrainState, x: np.ndarray) -> np.ndarray:
    """Predicted class probabilities of every replicate of ``state``: (replicates, n, K)."""
    layout = exp.layout
    logits = exp.trainer.predict(state.params, state.masks, state.model_state,
                                 layout.put(np.asarray(x, np.float32), layout.replicated))
    return layout.fetch(jax.nn.softmax(logits))


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


def level_rows(exp: Experiment, state: train.TrainState, level: int, replicates: list[int],
               diverged: np.ndarray, seconds: dict[str, float]) -> list[dict[str, Any]]:
    """The metrics rows of ``replicates`` of ``state`` at the end of ``level``: weight counts,
    :func:`evaluate`'s metrics, whether each replicate diverged, and the time spent (``seconds``
    by step, none for a level finished before this process started; and the evaluation's)."""
    if not replicates:
        return []
    start = time.perf_counter()
    values = evaluate(exp, state)
    counts = weight_counts(exp, state.masks)
    eval_s = time.perf_counter() - start
    return [{"level": level, "replicate": r, **counts[r], **values[r],
             "epochs": exp.config.train.epochs, "diverged": bool(diverged[r]),
             "time_eval_s": eval_s, **{f"time_{k}_s": v for k, v in seconds.items()}}
            for r in replicates]


def missing_replicates(exp: Experiment, rows: list[dict[str, Any]], level: int) -> list[int]:
    """The replicates that ``rows`` hold no row of at ``level``."""
    have = {row["replicate"] for row in rows if row["level"] == level}
    return [r for r in range(exp.replicates) if r not in have]
