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

import io
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from imp_jax import analysis, mixtures, tasks
from imp_jax import metrics as metrics_lib
from imp_jax.rundir import write_atomic

if TYPE_CHECKING:
    from imp_jax import imp

Row = Mapping[str, Any]
_TRAIN, _TEST, _NOISY, _TRUE = "tab:blue", "tab:red", "tab:orange", "black"


def _save(fig: Figure, out_dir: str | Path, name: str) -> list[Path]:
    # Rendered in memory, then replaced atomically: a kill while drawing leaves the old file.
    paths = [Path(out_dir) / f"{name}.png", Path(out_dir) / f"{name}.pdf"]
    for path in paths:
        buffer = io.BytesIO()
        fig.savefig(buffer, format=path.suffix[1:], dpi=150)
        write_atomic(path, buffer.getvalue())
    return paths


def _band(ax: Axes, curve: Mapping[str, list], label: str, color: str) -> None:
    x = np.asarray(curve["remaining_weights"])
    mean, std = np.asarray(curve["mean"]), np.asarray(curve["std"])
    ax.plot(x, mean, "o-", color=color, label=label, markersize=3)
    ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.2, linewidth=0)


def _weights_axis(ax: Axes, weights: Sequence[float]) -> None:
    if min(weights) == max(weights):  # one level: give the log axis a range of its own
        ax.set_xlim(min(weights) / 2, max(weights) * 2)
    ax.set_xscale("log")
    # Ticks at 1, 2, 5 x 10^k over narrow ranges (one per decade otherwise), as plain numbers:
    # matplotlib's default labels minor ticks over narrow ranges and they overlap.
    narrow = max(weights) < 100 * min(weights)
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0) if narrow else (1.0,)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.invert_xaxis()
    ax.set_xlabel("remaining weights (log scale)")
    ax.grid(alpha=0.3)


def _mark_best(ax: Axes, curve: Mapping[str, list], best: int | None, label: str) -> None:
    if best is None:  # the minimum is not reached yet: nothing to mark
        return
    i = curve["level"].index(best)
    weights = curve["remaining_weights"][i]
    ax.axvline(weights, color="grey", linestyle=":", linewidth=1)
    ax.plot(weights, curve["mean"][i], "*", color="gold", markeredgecolor="black",
            markersize=14, zorder=5, label=f"{label} ({weights:.0f} weights)")


def sdd_curve(rows: Sequence[Row], out_dir: str | Path, *, best: int | None = None,
              name: str = "sdd_curve") -> list[Path]:
    """Train and test error against remaining weights, best pruned model starred (none while
    the minimum is not reached).

    ``best`` defaults to :func:`imp_jax.analysis.best_level` of ``rows``.
    """
    best = analysis.best_level(rows) if best is None else best
    train, test = (analysis.level_curve(rows, m) for m in ("train_error", "test_error"))
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.add_subplot()
    _band(ax, train, "train (noisy labels)", _TRAIN)
    _band(ax, test, "test", _TEST)
    _mark_best(ax, test, best, f"best pruned, level {best}")
    _weights_axis(ax, test["remaining_weights"])
    ax.set_ylabel("error")
    ax.set_title("Error along the pruning path")
    ax.legend(fontsize="small")
    return _save(fig, out_dir, name)


def ece_curve(rows: Sequence[Row], out_dir: str | Path, *, num_bins: int = 15,
              best: int | None = None, name: str = "ece_curve") -> list[Path]:
    """ECE against remaining weights, for clean test labels and test labels noised as in
    training; the best pruned level (:func:`imp_jax.analysis.best_level`) starred on the clean
    curve."""
    best = analysis.best_level(rows) if best is None else best
    clean = analysis.level_curve(rows, f"test_ece_{num_bins}")
    noisy = analysis.level_curve(rows, f"test_noisy_ece_{num_bins}")
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.add_subplot()
    _band(ax, clean, "clean test labels", _TEST)
    _band(ax, noisy, "noisy test labels", _NOISY)
    _mark_best(ax, clean, best, f"best pruned, level {best}")
    _weights_axis(ax, clean["remaining_weights"])
    ax.set_ylabel(f"ECE ({num_bins} bins)")
    ax.set_title("Calibration along the pruning path")
    ax.legend(fontsize="small")
    return _save(fig, out_dir, name)


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
    (:func:`imp_jax.metrics.per_class_calibration`), their mean over classes drawn with the
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
    return _save(fig, out_dir, name)


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
                    ticks: Mapping[float, str] | None = None,
                    name: str = "mixture_profile") -> list[Path]:
    """Predicted vs exact p(y=0|x) along a path (see :func:`profile_line`).

    ``p_model`` maps a label to p(y=0|x) at the points, shape (m,) or (R, m) for replicates
    (drawn as mean ± std); ``p_true`` (and ``p_true_noisy``, under the training label noise)
    are the exact values, shape (m,).
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
    return _save(fig, out_dir, name)


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
    return _save(fig, out_dir, name)


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
    return _save(fig, out_dir, name)


def write_run_plots(run: imp.Run) -> list[Path]:
    """Draws every figure of an opened run into ``<run>/plots/``; returns the paths.

    Restores the dense level (0) and the best pruned level (:func:`imp_jax.analysis.best_level`;
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
    task = tasks.get(config.data.name)
    nu, dim, noise = config.data.mixture_nu, config.data.mixture_dim, config.data.label_noise
    t, line, ticks = profile_line(task.mixture, nu, dim)
    paths += mixture_profile(
        t, {k: run.probabilities(s, line)[..., 0] for k, s in states.items()},
        np.asarray(task.true_probs(nu, line))[:, 0], out,
        p_true_noisy=np.asarray(task.true_probs(nu, line, noise))[:, 0], ticks=ticks)
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


# ---------------------------------------------------------------------------------------------
# Studies: records of :func:`imp_jax.analysis.study_records`, one per setting of a sweep.


def _plain_log_ticks(axis: Any, values: Sequence[float]) -> None:
    # As _weights_axis: 1, 2, 5 x 10^k over narrow ranges, plain numbers.
    narrow = max(values) < 100 * min(values)
    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0) if narrow else (1.0,)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _setting_label(values: Mapping[str, float]) -> str:
    return ", ".join(f"{'ν' if k == 'nu' else k}={v:g}" for k, v in values.items())


def study_double_descent(records: Sequence[Mapping[str, Any]], out_dir: str | Path, *,
                         title: str = "", name: str = "double_descent") -> list[Path]:
    """The study's Figure 1: test error against weights of the full networks of every width
    (their double descent, black), each with its own sparse double descent from pruning
    (coloured by width, its best pruned model starred).

    ``records`` are those of a width sweep; the other swept axes (e.g. nu) get a panel each.
    Weights grow to the right here (the full networks' sizes), so a pruning path runs leftwards
    from its full network. Lines are means over replicates, the full networks' bars ± std.
    """
    panels: dict[tuple, list[Mapping[str, Any]]] = {}
    for record in records:
        if "width" not in record["values"]:
            raise ValueError(f"a record without a width: {record['values']}")
        others = tuple((k, v) for k, v in record["values"].items() if k != "width")
        panels.setdefault(others, []).append(record)
    widths = [r["values"]["width"] for r in records]
    norm = LogNorm(min(widths), max(widths) if max(widths) > min(widths) else min(widths) + 1)
    cmap = colormaps["viridis"]
    fig = Figure(figsize=(7 * len(panels) + 1, 5), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    for ax, (others, panel) in zip(axes, panels.items(), strict=True):
        panel = sorted(panel, key=lambda r: r["values"]["width"])
        starred = False
        for i, r in enumerate(panel):
            color = cmap(norm(r["values"]["width"]))
            curve = r["curve"]
            ax.plot(curve["remaining_weights"], curve["mean"], "-", color=color, linewidth=1,
                    alpha=0.8, label="pruning path" if i == 0 else None)
            best = r["models"].get("best")  # absent while the minimum is not reached
            if best is not None:
                ax.plot(best["remaining_weights"], best["metrics"]["test_error"]["mean"], "*",
                        color=color, markeredgecolor="black", markersize=11, zorder=6,
                        label="best pruned" if not starred else None)
                starred = True
        dense = [r["models"]["dense"]["metrics"]["test_error"] for r in panel]
        ax.errorbar([r["total_weights"] for r in panel], [d["mean"] for d in dense],
                    yerr=[d["std"] or 0.0 for d in dense], fmt="o-", color="black",
                    markersize=5, linewidth=2, capsize=2, zorder=5, label="full networks")
        # Log scales on both axes: the minima differ by a few tenths of a percent, while the
        # collapsed and the narrowest networks err at tens of percent.
        ax.set_xscale("log")
        ax.set_yscale("log")
        _plain_log_ticks(ax.xaxis, [w for r in panel for w in r["curve"]["remaining_weights"]])
        _plain_log_ticks(ax.yaxis, [e for r in panel for e in r["curve"]["mean"] if e > 0])
        ax.set_xlabel("weights (log scale)")
        ax.grid(alpha=0.3)
        ax.grid(alpha=0.15, which="minor", axis="y")
        ax.legend(fontsize="small")
        ax.set_title(_setting_label(dict(others)) or title, fontsize="medium")
    axes[0].set_ylabel("test error (log scale)")
    bar = fig.colorbar(ScalarMappable(norm, cmap), ax=list(axes),
                       label="width P of the full network")
    bar.set_ticks(sorted(set(widths)), labels=[f"{w:g}" for w in sorted(set(widths))])
    bar.ax.minorticks_off()
    if title and len(panels) > 1:
        fig.suptitle(title)
    return _save(fig, out_dir, name)


def effective_parameters(series: Mapping[str, Sequence[Mapping[str, Any]]],
                         out_dir: str | Path, *, against: str = "weights",
                         name: str | None = None) -> list[Path]:
    """The effective number of parameters against the full network's weights (log-log, with
    the diagonal where pruning would not help) or against ``nu`` (log y).

    ``series`` maps a label (e.g. "linear", "xor") to its records; the line is the minimum of
    the replicates' mean test-error curve, the band the mean ± std over replicates of each one's
    own minimum. Records without ``nu`` in their values are left out when ``against="nu"``,
    and so are those whose minimum is not reached yet.
    """
    if against not in ("weights", "nu"):
        raise ValueError(f"against must be 'weights' or 'nu', got {against!r}")
    fig = Figure(figsize=(6, 4.5), layout="constrained")
    ax = fig.add_subplot()
    drawn: list[float] = []
    heights: list[float] = []
    x_of = (lambda r: r["total_weights"]) if against == "weights" else (
        lambda r: r["values"]["nu"])
    for label, records in series.items():
        records = sorted((r for r in records if r["effective_parameters"] is not None
                          and (against == "weights" or "nu" in r["values"])), key=x_of)
        if not records:
            continue
        x = np.asarray([x_of(r) for r in records], dtype=np.float64)
        y = np.asarray([r["effective_parameters"] for r in records], dtype=np.float64)
        spread = [r["effective_parameters_replicates"] for r in records]
        mean = np.asarray([np.nan if s["mean"] is None else s["mean"] for s in spread],
                          dtype=np.float64)
        std = np.asarray([s["std"] or 0.0 for s in spread], dtype=np.float64)
        (line,) = ax.plot(x, y, "o-", markersize=4, label=label)
        ax.fill_between(x, np.maximum(mean - std, 1.0), mean + std, color=line.get_color(),
                        alpha=0.2, linewidth=0)
        drawn.extend(x)
        heights.extend([*y, *np.maximum(mean - std, 1.0), *(mean + std)])
    if not drawn:
        raise ValueError(f"no record to draw against {against}")
    if against == "weights":
        lo, hi = min(drawn), max(drawn)
        ax.plot([lo, hi], [lo, hi], "--", color="grey", linewidth=1, label="no pruning (y = x)")
        heights += [lo, hi]
        ax.set_xscale("log")
        _plain_log_ticks(ax.xaxis, drawn)
        ax.set_xlabel("weights of the full network (log scale)")
    else:
        ax.set_xlabel("ν (distance between the class centres per dimension)")
    ax.set_yscale("log")
    _plain_log_ticks(ax.yaxis, heights)
    ax.set_ylabel("effective number of parameters")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    return _save(fig, out_dir, name or f"effective_parameters_vs_{against}")
