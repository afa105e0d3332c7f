"""What every figure of imp_jax shares: how it is saved, and its axis of remaining weights.

Figures are ``matplotlib.figure.Figure`` objects rendered by Agg, never through pyplot, so they
hold no global state, need no display and are freed once saved. The x axis of pruning curves is
the number of remaining kernel weights on a log scale, decreasing to the right (pruning proceeds
left to right).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from imp_jax.run.rundir import write_atomic


def save(fig: Figure, out_dir: str | Path, name: str) -> list[Path]:
    """Writes ``fig`` as ``<name>.png`` and ``<name>.pdf`` into ``out_dir``; returns the paths."""
    # Rendered in memory, then replaced atomically: a kill while drawing leaves the old file.
    paths = [Path(out_dir) / f"{name}.png", Path(out_dir) / f"{name}.pdf"]
    for path in paths:
        buffer = io.BytesIO()
        fig.savefig(buffer, format=path.suffix[1:], dpi=150)
        write_atomic(path, buffer.getvalue())
    return paths


def weights_axis(ax: Axes, weights: Sequence[float]) -> None:
    """Makes the x axis of ``ax`` the log-scale, right-decreasing axis of remaining weights."""
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
