"""Figures of studies: records of :func:`imp_jax.core.analysis.study_records`, one per setting of a
sweep (the full networks' double descent with every pruning path, the effective number of
parameters, full vs best pruned per setting).

Each figure function writes ``<name>.png`` and ``<name>.pdf`` into ``out_dir`` (created if
needed) and returns the paths, as :mod:`imp_jax.plots.run` does for the figures of one run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from imp_jax.core.records import StudyRecord
from imp_jax.plots import drawing

_FULL, _PRUNED = "black", "tab:red"  # the colours of the run figures' true and test curves


def _plain_log_ticks(axis: Any, values: Sequence[float]) -> None:
    # As drawing.weights_axis: 1, 2, 5 x 10^k over narrow ranges, plain numbers.
    narrow = max(values) < 100 * min(values)
    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0) if narrow else (1.0,)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _setting_label(values: Mapping[str, float]) -> str:
    return ", ".join(f"{'ν' if k == 'nu' else k}={v:g}" for k, v in values.items())


def study_double_descent(records: Sequence[StudyRecord], out_dir: str | Path, *,
                         title: str = "", name: str = "double_descent") -> list[Path]:
    """The study's Figure 1: test error against weights of the full networks of every width
    (their double descent, black), each with its own sparse double descent from pruning
    (coloured by width, its best pruned model starred).

    ``records`` are those of a width sweep; the other swept axes (e.g. nu) get a panel each.
    Weights grow to the right here (the full networks' sizes), so a pruning path runs leftwards
    from its full network. Lines are means over replicates, the full networks' bars ± std.
    """
    panels: dict[tuple, list[StudyRecord]] = {}
    for record in records:
        if "width" not in record.values:
            raise ValueError(f"a record without a width: {record.values}")
        others = tuple((k, v) for k, v in record.values.items() if k != "width")
        panels.setdefault(others, []).append(record)
    widths = [r.values["width"] for r in records]
    norm = LogNorm(min(widths), max(widths) if max(widths) > min(widths) else min(widths) + 1)
    cmap = colormaps["viridis"]
    fig = Figure(figsize=(7 * len(panels) + 1, 5), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    for ax, (others, panel) in zip(axes, panels.items(), strict=True):
        panel = sorted(panel, key=lambda r: r.values["width"])
        starred = False
        for i, r in enumerate(panel):
            color = cmap(norm(r.values["width"]))
            curve = r.curve
            ax.plot(curve["remaining_weights"], curve["mean"], "-", color=color, linewidth=1,
                    alpha=0.8, label="pruning path" if i == 0 else None)
            best = r.best  # None while the minimum is not reached
            if best is not None:
                ax.plot(best.remaining_weights, best.metrics["test_error"].mean, "*",
                        color=color, markeredgecolor="black", markersize=11, zorder=6,
                        label="best pruned" if not starred else None)
                starred = True
        dense = [r.dense.metrics["test_error"] for r in panel]
        ax.errorbar([r.total_weights for r in panel], [d.mean for d in dense],
                    yerr=[d.std or 0.0 for d in dense], fmt="o-", color="black",
                    markersize=5, linewidth=2, capsize=2, zorder=5, label="full networks")
        # Log scales on both axes: the minima differ by a few tenths of a percent, while the
        # collapsed and the narrowest networks err at tens of percent.
        ax.set_xscale("log")
        ax.set_yscale("log")
        _plain_log_ticks(ax.xaxis, [w for r in panel for w in r.curve["remaining_weights"]])
        _plain_log_ticks(ax.yaxis, [e for r in panel for e in r.curve["mean"] if e > 0])
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
    return drawing.save(fig, out_dir, name)


def effective_parameters(series: Mapping[str, Sequence[StudyRecord]],
                         out_dir: str | Path, *, against: str = "weights",
                         name: str | None = None, title: str = "") -> list[Path]:
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
    x_of = (lambda r: r.total_weights) if against == "weights" else (lambda r: r.values["nu"])
    for label, records in series.items():
        records = sorted((r for r in records if r.effective_parameters is not None
                          and (against == "weights" or "nu" in r.values)), key=x_of)
        if not records:
            continue
        x = np.asarray([x_of(r) for r in records], dtype=np.float64)
        y = np.asarray([r.effective_parameters for r in records], dtype=np.float64)
        spread = [r.effective_parameters_replicates for r in records]
        mean = np.asarray([np.nan if s.mean is None else s.mean for s in spread],
                          dtype=np.float64)
        std = np.asarray([s.std or 0.0 for s in spread], dtype=np.float64)
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
    if title:
        ax.set_title(title, fontsize="medium")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    return drawing.save(fig, out_dir, name or f"effective_parameters_vs_{against}")


def full_vs_best(records: Sequence[StudyRecord], out_dir: str | Path, *,
                 metrics: Mapping[str, str], title: str = "",
                 name: str = "full_vs_best") -> list[Path]:
    """Each metric (title -> metric name) of the full and the best pruned network against nu,
    one panel per metric: the records of a nu sweep (mean ± std over replicates); settings whose
    minimum is not reached have no best pruned point."""
    records = sorted((r for r in records if "nu" in r.values), key=lambda r: r.values["nu"])
    if not records:
        raise ValueError("no record with a nu to draw")
    fig = Figure(figsize=(5 * len(metrics) + 1, 4), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, (label, metric) in zip(axes, metrics.items(), strict=True):
        for model, text, color in (("dense", "full", _FULL), ("best", "best pruned", _PRUNED)):
            points = [(r.values["nu"], r.models[model].metrics[metric])
                      for r in records if model in r.models
                      and getattr(r.models[model].metric(metric), "mean", None) is not None]
            if points:
                ax.errorbar([nu for nu, _ in points], [s.mean for _, s in points],
                            yerr=[s.std or 0.0 for _, s in points], fmt="o-", color=color,
                            capsize=2, markersize=4, label=text)
        ax.set_xlabel("ν (distance between the class centres per dimension)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return drawing.save(fig, out_dir, name)
