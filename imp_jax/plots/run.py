"""Figures of a run: the sparse double descent, calibration, and (for mixtures) the distance of
the predicted p(y|x) from the exact one.

Each figure function takes plain arrays or metrics rows, writes ``<name>.png`` and
``<name>.pdf`` into ``out_dir`` (created if needed) and returns the two paths. Figures are built
as ``matplotlib.figure.Figure`` objects rendered by Agg, never through pyplot, so they hold no
global state, need no display and are freed once saved. :func:`write_run_plots` draws all of
them for an opened run.

Conventions: the x axis of pruning curves is the number of remaining kernel weights on a log
scale, decreasing to the right (pruning proceeds left to right); bands are mean ± standard
deviation over replicates; probabilities of several replicates are pooled for reliability
diagrams and histograms.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from imp_jax.core import analysis
from imp_jax.core import metrics as metrics_lib
from imp_jax.data import mixtures
from imp_jax.plots import drawing

if TYPE_CHECKING:
    from imp_jax.run import driver

Row = Mapping[str, Any]
_TRAIN, _TEST, _NOISY, _TRUE = "tab:blue", "tab:red", "tab:orange", "black"


def _band(ax: Axes, curve: Mapping[str, list], label: str, color: str) -> None:
    x = np.asarray(curve["remaining_weights"])
    mean, std = np.asarray(curve["mean"]), np.asarray(curve["std"])
    ax.plot(x, mean, "o-", color=color, label=label, markersize=3)
    ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.2, linewidth=0)


def _mark_best(ax: Axes, curve: Mapping[str, list], best: int | None, label: str) -> None:
    if best is None:  # the minimum is not reached yet: nothing to mark
        return
    i = curve["level"].index(best)
    weights = curve["remaining_weights"][i]
    ax.axvline(weights, color="grey", linestyle=":", linewidth=1)
    ax.plot(weights, curve["mean"][i], "*", color="gold", markeredgecolor="black",
            markersize=14, zorder=5, label=f"{label} ({weights:.0f} weights)")


def sdd_curve(rows: Sequence[Row], out_dir: str | Path, *, best: int | None = None,
              name: str = "sdd_curve", title: str = "Error along the pruning path"
              ) -> list[Path]:
    """Train and test error against remaining weights, best pruned model starred (none while
    the minimum is not reached).

    ``best`` defaults to :func:`imp_jax.core.analysis.best_level` of ``rows``.
    """
    best = analysis.best_level(rows) if best is None else best
    train, test = (analysis.level_curve(rows, m) for m in ("train_error", "test_error"))
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.add_subplot()
    _band(ax, train, "train (noisy labels)", _TRAIN)
    _band(ax, test, "test", _TEST)
    _mark_best(ax, test, best, f"best pruned, level {best}")
    drawing.weights_axis(ax, test["remaining_weights"])
    ax.set_ylabel("error")
    ax.set_title(title, fontsize="medium")
    ax.legend(fontsize="small")
    return drawing.save(fig, out_dir, name)


def ece_curve(rows: Sequence[Row], out_dir: str | Path, *, num_bins: int = 15,
              best: int | None = None, name: str = "ece_curve",
              title: str = "Calibration along the pruning path") -> list[Path]:
    """ECE against remaining weights, for clean test labels and test labels noised as in
    training; the best pruned level (:func:`imp_jax.core.analysis.best_level`) starred on the clean
    curve."""
    best = analysis.best_level(rows) if best is None else best
    clean = analysis.level_curve(rows, f"test_ece_{num_bins}")
    noisy = analysis.level_curve(rows, f"test_noisy_ece_{num_bins}")
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.add_subplot()
    _band(ax, clean, "clean test labels", _TEST)
    _band(ax, noisy, "noisy test labels", _NOISY)
    _mark_best(ax, clean, best, f"best pruned, level {best}")
    drawing.weights_axis(ax, clean["remaining_weights"])
    ax.set_ylabel(f"ECE ({num_bins} bins)")
    ax.set_title(title, fontsize="medium")
    ax.legend(fontsize="small")
    return drawing.save(fig, out_dir, name)


def _pool(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(R, n, K) probabilities and (n,) labels as (R*n, K) and (R*n,)."""
    probs = np.asarray(probs)
    if probs.ndim == 2:
        return probs, np.asarray(labels)
    return probs.reshape(-1, probs.shape[-1]), np.tile(np.asarray(labels), probs.shape[0])


def _class_averaged(ax: Axes, per_class: metrics_lib.CalibrationCurve, color: str,
                    label: str) -> None:
    """The mean over classes of one-vs-rest curves, ± their standard deviation over classes."""
    predicted, observed = np.asarray(per_class.predicted), np.asarray(per_class.observed)
    seen = np.isfinite(observed).any(axis=0)  # bins some class has examples in
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a bin one class reaches: no spread
        x, y = np.nanmean(predicted[:, seen], 0), np.nanmean(observed[:, seen], 0)
        spread = np.nan_to_num(np.nanstd(observed[:, seen], 0))
    ax.plot(x, y, "o-", color=color, markersize=3, label=label)
    ax.fill_between(x, y - spread, y + spread, color=color, alpha=0.2, linewidth=0)


def calibration(probs: Mapping[str, np.ndarray], labels: np.ndarray, out_dir: str | Path, *,
                noisy_labels: np.ndarray | None = None, num_bins: int = 15,
                name: str = "calibration") -> list[Path]:
    """Reliability diagrams, class-averaged calibration curves and confidence histograms.

    One column per model (``probs`` maps a title to probabilities of shape (n, K) or, for
    replicates, (R, n, K), pooled over R). Rows: accuracy per confidence bin of the predicted
    class (bars for ``labels``, a line for ``noisy_labels``) with the ECE of each (of the
    pooled predictions, so close to but not the mean of the replicates' ECEs); the
    one-vs-rest calibration curve averaged over classes; the histogram of the predicted class's
    probability with the mean confidence and the accuracy marked.

    The calibration curve is the study's: one one-vs-rest curve per class
    (:func:`imp_jax.core.metrics.per_class_calibration`), their mean over classes drawn with the
    between-class standard deviation shaded.
    """
    fig = Figure(figsize=(4 * len(probs), 10), layout="constrained")
    axes = fig.subplots(3, len(probs), squeeze=False, sharey="row")
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    centres, width = (edges[:-1] + edges[1:]) / 2, 1.0 / num_bins
    label_sets = {"clean": labels} if noisy_labels is None else {"clean": labels,
                                                                 "noisy": noisy_labels}
    for col, (title, p) in enumerate(probs.items()):
        rel, curve, hist = axes[:, col]
        eces = []
        for kind, y in label_sets.items():
            pooled, pooled_y = _pool(p, y)
            table = metrics_lib.reliability_table(pooled, pooled_y, num_bins)
            accuracy = np.asarray(table.accuracy)
            eces.append(f"{float(metrics_lib.ece(pooled, pooled_y, num_bins)):.3f} {kind}")
            if kind == "clean":
                rel.bar(centres, np.nan_to_num(accuracy), width=width, color=_TEST, alpha=0.6,
                        edgecolor="black", linewidth=0.5, label="accuracy, clean labels")
            else:
                rel.plot(np.asarray(table.confidence), accuracy, "o-", color=_NOISY,
                         markersize=3, label="accuracy, noisy labels")
            _class_averaged(curve, metrics_lib.per_class_calibration(pooled, pooled_y, num_bins),
                            _TEST if kind == "clean" else _NOISY, f"{kind} labels")
        rel.set_title(f"{title}\nECE {' / '.join(eces)}", fontsize="medium")
        rel.set_xlabel("confidence (predicted class)")
        curve.set_xlabel("predicted p(y=k|x), averaged over classes k")
        pooled, pooled_y = _pool(p, labels)
        counts = np.asarray(metrics_lib.confidence_histogram(pooled, num_bins))
        hist.bar(centres, counts / counts.sum(), width=width, color="grey", edgecolor="black",
                 linewidth=0.5)
        confidence = float(np.mean(np.max(pooled, axis=-1)))
        accuracy = float(np.mean(np.argmax(pooled, axis=-1) == pooled_y))
        hist.axvline(confidence, color="black", linestyle="--",
                     label=f"mean confidence {confidence:.3f}")
        hist.axvline(accuracy, color=_TEST, linestyle=":", label=f"accuracy {accuracy:.3f}")
        hist.set_xlabel("confidence (predicted class)")
        for ax in (rel, curve):
            ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=1)
            ax.set_ylim(0, 1)
        for ax in (rel, curve, hist):
            ax.set_xlim(0, 1)
            ax.legend(fontsize="x-small", loc="upper left")
    axes[0, 0].set_ylabel("accuracy")
    axes[1, 0].set_ylabel("observed frequency of class k")
    axes[2, 0].set_ylabel("fraction of examples")
    return drawing.save(fig, out_dir, name)


def profile_line(task: str, nu: float, dim: int, num: int = 601
                 ) -> tuple[np.ndarray, np.ndarray, dict[float, str]]:
    """Points along which :func:`mixture_profile` compares predicted and exact p(y|x).

    ``"linear"``: the line through the two class means, ``x(t) = t * nu * 1`` for t in
    [-1, 2] (t = 0 the class-0 mean, t = 1 the class-1 mean). ``"xor"``: the closed polygon
    through the four component centres, class 0 and 1 alternating: 0 -> nu [1, 0] -> nu 1 ->
    nu [0, 1] -> 0 for t in [0, 4], one unit of t per side.

    Returns:
      ``t`` (num,), the points ``x`` (num, dim) float32, and tick labels of the centres by t.
      The centres are points of the grid when ``num - 1`` is a multiple of 3 (linear) or 4
      (xor), as with the default.
    """
    c = mixtures.centres(task, nu, dim)
    if task == "linear":
        t = np.linspace(-1.0, 2.0, num)
        start, end = c[0, 0], c[1, 0]
        return (t, (start + t[:, None] * (end - start)).astype(np.float32),
                {0.0: "class 0 mean", 1.0: "class 1 mean"})
    corners = np.stack([c[0, 0], c[1, 0], c[0, 1], c[1, 1], c[0, 0]])
    t = np.linspace(0.0, 4.0, num)
    side = np.minimum(np.floor(t).astype(int), 3)
    frac = (t - side)[:, None]
    x = corners[side] + frac * (corners[side + 1] - corners[side])
    ticks = {0.0: "0 (cl. 0)", 1.0: "ν[1,0] (cl. 1)", 2.0: "ν1 (cl. 0)", 3.0: "ν[0,1] (cl. 1)",
             4.0: "0 (cl. 0)"}
    return t, x.astype(np.float32), ticks


def mixture_profile(t: np.ndarray, p_model: Mapping[str, np.ndarray], p_true: np.ndarray,
                    out_dir: str | Path, *, p_true_noisy: np.ndarray | None = None,
                    ticks: Mapping[float, str] | None = None, caption: str = "",
                    name: str = "mixture_profile") -> list[Path]:
    """Predicted vs exact p(y=0|x) along a path (see :func:`profile_line`).

    ``p_model`` maps a label to p(y=0|x) at the points, shape (m,) or (R, m) for replicates
    (drawn as mean ± std); ``p_true`` (and ``p_true_noisy``, under the training label noise)
    are the exact values, shape (m,); ``caption`` is printed under the axes.
    """
    fig = Figure(figsize=(10, 4), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(t, p_true, "-", color=_TRUE, linewidth=2, label="exact p(y=0|x)")
    if p_true_noisy is not None:
        ax.plot(t, p_true_noisy, "--", color=_TRUE, linewidth=1, label="exact, noisy labels")
    for (label, p), color in zip(p_model.items(), ("tab:purple", "tab:green", "tab:cyan"),
                                 strict=False):
        p = np.atleast_2d(p)
        mean, std = p.mean(0), p.std(0)
        ax.plot(t, mean, color=color, label=label)
        ax.fill_between(t, mean - std, mean + std, color=color, alpha=0.2, linewidth=0)
    if ticks:
        ax.set_xticks(list(ticks), list(ticks.values()), fontsize="small")
    ax.set_xlabel("position along the path through the centres")
    ax.set_ylabel("p(y=0|x)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    fig.legend(fontsize="small", loc="outside right upper")  # the curves fill the axes
    if caption:
        fig.text(0.01, 0.0, caption, fontsize="small", va="bottom", wrap=True)
        fig.get_layout_engine().set(rect=(0, 0.08, 1, 0.92))
    return drawing.save(fig, out_dir, name)


# Under a bias-free network's profile: why its curve passes 0.5 at the origin.
NO_BIAS_CAPTION = ("Bias-free network (model.use_bias=False, as in the study): its logits are "
                   "0 at x = 0, so p = 0.5 there whatever it learned; x = 0 is the class-0 "
                   "mean of the path. --config.model.use_bias=True trains the variant with "
                   "biases.")


def mixture_vs_true(p_true: np.ndarray, p_model: Mapping[str, np.ndarray],
                    out_dir: str | Path, *, label_noise: float | None = None,
                    num_bins: int = 20, name: str = "mixture_vs_true") -> list[Path]:
    """Predicted against exact p(y=0|x) over a sample of points, one panel per model.

    ``p_true`` (n,) is the exact p(y=0|x) and ``p_model`` maps a title to the predictions,
    (n,) or (R, n) (pooled over replicates). Points are binned by ``p_true`` into ``num_bins``
    equal-width bins; the line is the mean prediction per bin and the band its standard
    deviation (the spread of predictions for points with the same true probability). With
    ``label_noise`` the conditional of noisy labels, ``(1 - eta) p + eta / 2``, is drawn too:
    what a model fitting the training labels perfectly would predict.
    """
    p_true = np.asarray(p_true)
    bins = np.minimum((p_true * num_bins).astype(int), num_bins - 1)
    centres = (np.arange(num_bins) + 0.5) / num_bins
    fig = Figure(figsize=(4.5 * len(p_model), 4.5), layout="constrained")
    axes = fig.subplots(1, len(p_model), squeeze=False, sharey=True)[0]
    for ax, (title, p) in zip(axes, p_model.items(), strict=True):
        p = np.atleast_2d(p)
        pooled_bins = np.tile(bins, p.shape[0])
        count = np.bincount(pooled_bins, minlength=num_bins)
        total = np.bincount(pooled_bins, p.reshape(-1), minlength=num_bins)
        squares = np.bincount(pooled_bins, p.reshape(-1) ** 2, minlength=num_bins)
        with np.errstate(invalid="ignore", divide="ignore"):  # empty bins become NaN: gaps
            mean = total / count
            std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
        ax.plot([0, 1], [0, 1], "-", color=_TRUE, linewidth=1, label="exact")
        if label_noise is not None:
            ax.plot([0, 1], [label_noise / 2, 1 - label_noise / 2], "--", color=_TRUE,
                    linewidth=1, label="exact, noisy labels")
        ax.plot(centres, mean, "o-", color="tab:purple", markersize=3, label="model (mean)")
        ax.fill_between(centres, mean - std, mean + std, color="tab:purple", alpha=0.2,
                        linewidth=0, label="model (± std)")
        ax.set_title(f"{title}\nmean |p - p_true| = {float(np.mean(np.abs(p - p_true))):.3f}",
                     fontsize="medium")
        ax.set_xlabel("exact p(y=0|x)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small", loc="upper left")
    axes[0].set_ylabel("predicted p(y=0|x)")
    return drawing.save(fig, out_dir, name)


def pca_basis(x: np.ndarray, n_components: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Mean (dim,) and the top principal directions (n_components, dim) of points (n, dim).

    Project with ``(x - mean) @ basis.T``. Each direction's largest entry is made positive so
    the projection does not flip sign between runs.
    """
    x = np.asarray(x, np.float64)
    mean = x.mean(0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    basis = vt[:n_components]
    signs = np.sign(basis[np.arange(len(basis)), np.argmax(np.abs(basis), axis=1)])
    return mean, basis * signs[:, None]


def mixture_error_map(xy: np.ndarray, errors: Mapping[str, np.ndarray], out_dir: str | Path, *,
                      centres_xy: np.ndarray | None = None, gridsize: int = 40,
                      name: str = "mixture_error_map") -> list[Path]:
    """|p_model - p_true| over a 2-D projection of the inputs, one panel per model.

    ``xy`` (n, 2) are the projected points (e.g. on :func:`pca_basis`), ``errors`` maps a
    title to the per-point error (n,); each hexagon shows the mean error of its points, on a
    colour scale shared by the panels. ``centres_xy`` (k, 2), if given, marks the projected
    component centres.
    """
    fig = Figure(figsize=(5 * len(errors) + 1, 4.5), layout="constrained")
    axes = fig.subplots(1, len(errors), squeeze=False, sharex=True, sharey=True)[0]
    hexbins = []
    for ax, (title, err) in zip(axes, errors.items(), strict=True):
        hexbins.append(ax.hexbin(xy[:, 0], xy[:, 1], C=err, reduce_C_function=np.mean,
                                 gridsize=gridsize, cmap="viridis", mincnt=1))
        if centres_xy is not None:
            ax.plot(centres_xy[:, 0], centres_xy[:, 1], "x", color="red", markersize=10,
                    markeredgewidth=2, label="component centres")
            ax.legend(fontsize="x-small", loc="upper right")
        ax.set_title(f"{title}\nmean |p - p_true| = {float(np.mean(err)):.3f}",
                     fontsize="medium")
        ax.set_xlabel("PC 1")
    axes[0].set_ylabel("PC 2")
    vmax = max(float(np.max(h.get_array())) for h in hexbins)
    for h in hexbins:
        h.set_clim(0.0, vmax)
    fig.colorbar(hexbins[-1], ax=list(axes), label="|p_model(y=0|x) - p_true(y=0|x)|")
    return drawing.save(fig, out_dir, name)


def write_run_plots(run: driver.Run) -> list[Path]:
    """Draws every figure of an opened run into ``<run>/plots/``; returns the paths.

    Restores the dense level (0) and the best pruned level
    (:func:`imp_jax.core.analysis.best_level`;
    the dense level alone while the minimum is not reached) and compares them on the test set;
    for mixture tasks also along :func:`profile_line`, against the exact p(y|x) of the run's
    fresh sample, and on that sample projected on its two principal directions.
    """
    config = run.exp.config
    rows = run.dir.read_rows()
    num_bins = config.eval.num_bins
    best = analysis.best_level(rows)
    out = run.dir.plots
    paths = [*sdd_curve(rows, out, best=best),
             *ece_curve(rows, out, num_bins=num_bins, best=best)]
    curve = analysis.level_curve(rows, "test_error")
    weights = dict(zip(curve["level"], curve["remaining_weights"], strict=True))
    states = {f"{kind} (level {level}, {weights[level]:.0f} weights)": run.restore_level(level)
              for kind, level in (("dense", 0), ("best pruned", best)) if level is not None}
    ds = run.exp.dataset
    paths += calibration({k: run.probabilities(s, ds.x_test) for k, s in states.items()},
                         ds.y_test, out, noisy_labels=ds.y_test_noisy, num_bins=num_bins)
    if run.exp.fresh is None:
        return paths
    task = run.exp.task
    nu, dim, noise = config.data.mixture_nu, config.data.mixture_dim, config.data.label_noise
    t, line, ticks = profile_line(task.mixture, nu, dim)
    paths += mixture_profile(
        t, {k: run.probabilities(s, line)[..., 0] for k, s in states.items()},
        np.asarray(task.true_probs(nu, line))[:, 0], out,
        p_true_noisy=np.asarray(task.true_probs(nu, line, noise))[:, 0], ticks=ticks,
        caption="" if config.model.use_bias else NO_BIAS_CAPTION)
    x = np.asarray(run.exp.fresh.x)
    p_true = np.asarray(run.exp.fresh.p_true)[:, 0]
    p_fresh = {k: run.probabilities(s, x)[..., 0] for k, s in states.items()}
    paths += mixture_vs_true(p_true, p_fresh, out, label_noise=noise)
    mean, basis = pca_basis(x)
    # Per point, the error averaged over replicates.
    errors = {k: np.mean(np.abs(p - p_true), axis=0) for k, p in p_fresh.items()}
    centres = task.centres(nu, dim).reshape(-1, dim)
    paths += mixture_error_map((x - mean) @ basis.T, errors, out,
                               centres_xy=(centres - mean) @ basis.T)
    return paths
