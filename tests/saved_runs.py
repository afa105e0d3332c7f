"""Reading a finished run back from its own files, and recomputing what it claims.

The invariant and row tests check a run against its saved states (the Orbax checkpoints of its
run directory) and its metrics rows, never against a second run of the same code: the helpers
here rebuild a level's start from the saved rewind point and the saved masks, replay a level
from it, and recompute every metric of a row with numpy and :mod:`imp_jax.core.metrics` from the
saved params and the dataset, without the run's evaluation path (:mod:`imp_jax.run.evaluation`).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
import pytest

from imp_jax.core import metrics, train
from imp_jax.data import datasets, mixtures, tasks
from imp_jax.run import driver, experiment
from imp_jax.run.checkpoints import Checkpoints

PyTree = Any
Row = dict[str, Any]
# Keys of a row that are bookkeeping, not measurements of the level's network.
BOOKKEEPING = ("level", "replicate", "epochs", "diverged")


@dataclasses.dataclass(frozen=True)
class SavedRun:
    """A finished run as its files hold it: states on the host (numpy leaves, a leading
    replicate axis), rows in file order."""

    workdir: Path
    exp: experiment.Experiment
    rewind: train.TrainState
    levels: list[train.TrainState]
    rows: list[Row]

    @property
    def config(self) -> ml_collections.ConfigDict:
        return self.exp.config

    def row(self, level: int, replicate: int) -> Row:
        (row,) = [r for r in self.rows if r["level"] == level and r["replicate"] == replicate]
        return row


def load(workdir: Path, exp: experiment.Experiment | None = None) -> SavedRun:
    """The saved rewind point, every finished level's end state and the rows of ``workdir``
    (read-only). ``exp`` saves rebuilding the experiment of an in-process run."""
    runner = (driver.Run(exp.config, str(workdir), exp, read_only=True) if exp is not None
              else driver.open_run(str(workdir)))
    with runner:
        rewind = runner.ckpt.restore_rewind(runner.exp.rewind_step, runner.target)
        levels = [runner.restore_level(level) for level in runner.finished_levels()]
        assert runner.finished_levels() == list(range(len(levels)))
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return SavedRun(workdir, runner.exp, jax.device_get(rewind),
                    [jax.device_get(s) for s in levels], rows)


@dataclasses.dataclass
class SaveSpy:
    """Every state a run saves (rewind point, in-level progress, level ends), as numpy, with its
    checkpoint series (``rewind``, ``progress``, ``levels``) and metadata: the progress series
    keeps only its latest checkpoint on disk."""

    saved: list[tuple[str, dict[str, Any], train.TrainState]] = dataclasses.field(
        default_factory=list)

    def wrap(self, save: Callable[..., None]) -> Callable[..., None]:
        def spy(manager: Any, index: int, state: PyTree, meta: dict[str, Any]) -> None:
            save(manager, index, state, meta)
            self.saved.append((Path(manager.directory).name, dict(meta), jax.device_get(state)))

        return spy


def run_in_process(config: ml_collections.ConfigDict, workdir: Path,
                   spy: SaveSpy | None = None) -> SavedRun:
    """Runs ``config`` to the end in ``workdir`` and reads it back; ``spy`` sees every save."""
    exp = driver.build(config)
    with pytest.MonkeyPatch.context() as mp:
        if spy is not None:
            mp.setattr(Checkpoints, "save", staticmethod(spy.wrap(Checkpoints.save)))
        with driver.Run(config, str(workdir), exp) as runner:
            runner.run()
    return load(workdir, exp)


# -- trees ----------------------------------------------------------------------------------------


def leaves_with_paths(tree: PyTree) -> Iterator[tuple[str, np.ndarray]]:
    """``(path, leaf)`` of every leaf, paths ``/``-joined like the masks library's."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    for path, leaf in flat:
        yield "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path), leaf


def replicate(tree: PyTree, r: int) -> PyTree:
    """Replicate ``r``'s slice of every leaf."""
    return jax.tree_util.tree_map(lambda x: np.asarray(x)[r], tree)


def kernels(tree: PyTree) -> dict[str, np.ndarray]:
    """The kernels (leaves with ndim >= 2) of one replicate's tree, by path."""
    return {p: np.asarray(x) for p, x in leaves_with_paths(tree) if np.ndim(x) >= 2}


def prunable(config: ml_collections.ConfigDict, path: str) -> bool:
    """Whether the kernel at ``path`` may be pruned under ``config.prune.exclude``."""
    return not any(re.search(q, path) for q in config.prune.exclude)


# -- a level's start, rebuilt from the saved states ---------------------------------------------


def fresh_optimizer_state(like: PyTree) -> PyTree:
    """A freshly initialised SGD optimizer state of ``like``'s structure: the momentum trace
    starts at zero (weight decay keeps no state)."""
    return jax.tree_util.tree_map(np.zeros_like, like)


def rewound(point: train.TrainState, masks: PyTree, like_opt: PyTree) -> train.TrainState:
    """The state a level starts from: ``point``'s params under ``masks``, a fresh optimizer
    state, ``point``'s step, data-order key and model state."""
    params = jax.tree_util.tree_map(lambda p, m: np.where(m, p, 0).astype(p.dtype),
                                    point.params, masks)
    return point.replace(params=params, masks=masks, opt_state=fresh_optimizer_state(like_opt))


def replay(exp: experiment.Experiment, start: train.TrainState, steps: int | None = None
           ) -> train.TrainState:
    """``start`` trained to the end of its level (or ``steps`` steps on), epoch after epoch in
    the run's data order: what the saved end state must be if the level started there."""
    spe = exp.trainer.steps_per_epoch
    step = int(np.asarray(start.step).reshape(-1)[0])
    stop = exp.total_steps if steps is None else step + steps
    rng = np.asarray(start.rng)
    state = exp.layout.put_state(jax.tree_util.tree_map(np.array, start))
    while step < stop:
        epoch, lo = divmod(step, spe)
        hi = min(spe, stop - epoch * spe)
        order = exp.layout.put(exp.trainer.epoch_order(rng, epoch), exp.layout.per_replicate)
        state, _ = exp.trainer.run_steps(state, exp.x_train, exp.y_train, order, lo, hi)
        step = epoch * spe + hi
    return jax.device_get(state)


# -- rows, recomputed ---------------------------------------------------------------------------


def dataset(config: ml_collections.ConfigDict) -> datasets.Dataset:
    """The run's dataset, loaded afresh from its config (the labels the rows must be of)."""
    c = config.data
    return datasets.load_dataset(
        c.name, key=jax.random.key(c.seed), label_noise=c.label_noise,
        data_dir=c.data_dir or None, manual_dir=c.manual_dir or None,
        train_subset=c.train_subset, validation_size=c.validation_size,
        mixture_nu=c.mixture_nu, mixture_dim=c.mixture_dim, mixture_train=c.mixture_train,
        mixture_test=c.mixture_test, classes=c.classes, normalisation=c.normalisation)


@dataclasses.dataclass(frozen=True)
class Fresh:
    """A mixture's fresh sample, drawn here: points, labels from the clean p(y|x), and p(y|x)
    without and with the label noise."""

    x: np.ndarray
    labels: np.ndarray
    p_true: np.ndarray
    p_true_noisy: np.ndarray


def fresh(config: ml_collections.ConfigDict) -> Fresh:
    """The fresh points of a mixture run (their own key, ``fold_in(key(data.seed), 0xF4E5)``),
    their clean p(y|x) from :func:`mixtures.true_probs` without noise, and the noisy one by the
    noise rule: a label replaced by a uniform one with probability eta."""
    c = config.data
    kind = tasks.get(c.name).mixture
    key = jax.random.fold_in(jax.random.key(c.seed), 0xF4E5)
    x, y = mixtures.sample(key, kind, c.mixture_nu, config.eval.fresh_points, c.mixture_dim)
    p = np.asarray(mixtures.true_probs(kind, c.mixture_nu, x), np.float64)
    eta = c.label_noise
    return Fresh(x, y, p, (1 - eta) * p + eta / mixtures.NUM_CLASSES)


def fcn_logits(params: PyTree, masks: PyTree, x: np.ndarray) -> np.ndarray:
    """The logits of one replicate's FCN (``hidden_0..``, ``output``; ReLU between), masked,
    in float64 numpy."""
    h = np.asarray(x, np.float64).reshape(len(x), -1)
    names = sorted((k for k in params if k.startswith("hidden_")), key=lambda k: int(k[7:]))
    for name in [*names, "output"]:
        layer, mask = params[name], masks[name]
        h = h @ np.where(mask["kernel"], layer["kernel"], 0).astype(np.float64)
        if "bias" in layer:
            h = h + np.asarray(layer["bias"], np.float64)
        if name != "output":
            h = np.maximum(h, 0.0)
    return h


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def labelled_metrics(logits: np.ndarray, labels: np.ndarray, num_bins: int) -> dict[str, float]:
    """Error, NLL, Brier and confidence in numpy; the binned calibration errors with
    :mod:`imp_jax.core.metrics` (unit-tested against references of their own)."""
    probs = softmax(logits)
    n = len(labels)
    log_probs = logits - logits.max(-1, keepdims=True)
    log_probs = log_probs - np.log(np.exp(log_probs).sum(-1, keepdims=True))
    confidence = probs.max(-1)
    correct = probs.argmax(-1) == labels
    one_hot = np.eye(probs.shape[1])[labels]
    p32 = probs.astype(np.float32)
    return {
        "error": float(np.mean(~correct)),
        "nll": float(-np.mean(log_probs[np.arange(n), labels])),
        "brier": float(np.mean(np.sum((probs - one_hot) ** 2, -1))),
        f"ece_{num_bins}": float(metrics.ece(p32, labels, num_bins)),
        f"mce_{num_bins}": float(metrics.mce(p32, labels, num_bins)),
        f"ece_em_{num_bins}": float(metrics.ece(p32, labels, num_bins, binning="equal_mass")),
        "overconfidence": float(confidence.mean() - correct.mean()),
        "mean_confidence": float(confidence.mean()),
    }


def weight_counts(config: ml_collections.ConfigDict, masks: PyTree) -> dict[str, Any]:
    """One replicate's kernel-weight counts: all kernels (output layer included) and those
    ``config.prune`` may prune."""
    ks = kernels(masks)
    kept = {p: int(m.sum()) for p, m in ks.items()}
    total = sum(m.size for m in ks.values())
    return {"remaining_weights": sum(kept.values()), "total_weights": total,
            "prunable_remaining": sum(v for p, v in kept.items() if prunable(config, p)),
            "prunable_total": sum(m.size for p, m in ks.items() if prunable(config, p)),
            "sparsity": 1.0 - sum(kept.values()) / total}


def recompute_row(config: ml_collections.ConfigDict, ds: datasets.Dataset, sample: Fresh | None,
                  params: PyTree, masks: PyTree) -> dict[str, float]:
    """Every measurement of one replicate's row from its saved ``params`` and ``masks``."""
    b = config.eval.num_bins
    out: dict[str, float] = dict(weight_counts(config, masks))
    train_logits = fcn_logits(params, masks, ds.x_train)
    predicted = train_logits.argmax(-1)
    wrong = predicted != ds.y_train
    noisy, clean = ds.corrupted, ~ds.corrupted
    out.update({
        "train_loss": labelled_metrics(train_logits, ds.y_train, b)["nll"],
        "train_error": float(wrong.mean()),
        "train_error_clean_subset": float(wrong[clean].mean()) if clean.any() else 0.0,
        # The relabelled examples, against the label training saw and against their true one.
        "train_error_noisy_subset": float(wrong[noisy].mean()) if noisy.any() else 0.0,
        "train_noisy_subset_true_label_acc": (float((predicted == ds.y_train_clean)[noisy].mean())
                                              if noisy.any() else 0.0),
    })
    test_logits = fcn_logits(params, masks, ds.x_test)
    for prefix, labels in (("test_", ds.y_test), ("test_noisy_", ds.y_test_noisy)):
        out.update({prefix + k: v for k, v in labelled_metrics(test_logits, labels, b).items()})
    if ds.x_val is not None:
        val = labelled_metrics(fcn_logits(params, masks, ds.x_val), ds.y_val, b)
        out.update(val_error=val["error"], val_loss=val["nll"])
    if sample is not None:
        probs = softmax(fcn_logits(params, masks, sample.x))
        distance = 0.5 * np.abs(probs - sample.p_true).sum(-1)

        def kl(p_true: np.ndarray) -> float:
            q = np.clip(probs, np.finfo(np.float32).tiny, 1.0)
            return float(np.mean(np.sum(p_true * (np.log(p_true) - np.log(q)), -1)))

        confidence, correct = probs.max(-1), probs.argmax(-1) == sample.labels
        out.update({
            "true_abs_error": float(distance.mean()),
            "true_abs_error_max": float(distance.max()),
            "true_abs_error_q99": float(np.quantile(distance, 0.99)),
            "true_kl": kl(sample.p_true),
            "true_noisy_abs_error": float(np.mean(0.5 * np.abs(probs - sample.p_true_noisy)
                                                  .sum(-1))),
            "true_noisy_kl": kl(sample.p_true_noisy),
            f"fresh_ece_{b}": float(metrics.ece(probs.astype(np.float32), sample.labels, b)),
            "fresh_overconfidence": float(confidence.mean() - correct.mean()),
            "fresh_error": float(np.mean(~correct)),
        })
    return out


def near_bin_edge(probs: np.ndarray, num_bins: int, eps: float = 1e-5) -> bool:
    """Whether some confidence lies within ``eps`` of an inner bin edge, where float32 and
    float64 logits may bin it differently (and move a small bin's gap, hence the MCE)."""
    confidence = probs.max(-1)
    edges = np.arange(1, num_bins) / num_bins
    return bool(np.any(np.abs(confidence[:, None] - edges[None]) < eps))


def set_size(name: str, ds: datasets.Dataset, sample: Fresh | None) -> int:
    """The number of examples the row's metric ``name`` is taken over."""
    if name.startswith("train_"):
        return ds.n_train
    if name.startswith("val_"):
        return len(ds.y_val)
    if name.startswith(("true_", "fresh_")):
        return len(sample.labels)
    return ds.n_test


def tolerance(name: str, n: int) -> float:
    """How far a recomputed value may lie from the row's: the run computes in float32, this
    module in float64, so a prediction or a confidence bin may flip for one or two of the ``n``
    examples; continuous values agree closely."""
    if "abs_error" not in name and any(s in name for s in ("error", "acc", "ece",
                                                             "overconfidence")):
        return 2.5 / n + 1e-5
    if "mce" in name:
        return 1e-3
    return 1e-4
