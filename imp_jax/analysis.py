"""Analysis of a run's metrics rows: pruning curves, the best pruned model, sparse double descent.

Every function takes the rows of ``metrics.jsonl`` (dicts with at least ``level``,
``replicate`` and ``remaining_weights``; one row per (replicate, level)) and aggregates over
replicates with the mean and the sample standard deviation (``ddof=1``; 0 with one replicate).
Pruning removes weights at every level, so levels in increasing order are models with
decreasing numbers of weights. Nothing here needs JAX: the functions are usable on rows
collected from many runs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

Row = Mapping[str, Any]

# Compared between the dense and the best pruned model in the summary. ``{b}`` is the ECE bin
# count; metrics absent from the rows (the mixture-only ones on real data) are left out.
REQUIRED_METRICS = ("test_error", "test_nll", "test_ece_{b}", "test_noisy_ece_{b}",
                    "test_overconfidence")
OPTIONAL_METRICS = ("train_error", "test_brier", "test_mean_confidence", "test_noisy_nll",
                    "test_noisy_overconfidence", "val_error", "true_abs_error", "true_kl",
                    "true_noisy_abs_error", "true_noisy_kl", "fresh_ece_{b}")
STATUS_NOT_PASSED = "minimum not yet reached"
STATUS_PASSED = "minimum passed"
STATUS_COLLAPSED = "collapsed"


def _by_level(rows: Iterable[Row]) -> dict[int, list[Row]]:
    """Rows grouped by level, levels in increasing order; ValueError for no rows."""
    grouped: dict[int, list[Row]] = {}
    for row in rows:
        grouped.setdefault(int(row["level"]), []).append(row)
    if not grouped:
        raise ValueError("no metrics rows: the run has not finished any level yet")
    return dict(sorted(grouped.items()))


def _values(level_rows: Sequence[Row], metric: str, level: int) -> np.ndarray:
    missing = [r.get("replicate") for r in level_rows if metric not in r]
    if missing:
        raise ValueError(f"metric {metric!r} is missing from the rows of level {level} "
                         f"(replicates {missing})")
    return np.asarray([r[metric] for r in level_rows], dtype=np.float64)


def _std(values: np.ndarray) -> float:
    return float(np.std(values, ddof=1)) if values.size > 1 else 0.0


def level_curve(rows: Iterable[Row], metric: str) -> dict[str, list]:
    """Per-level mean and spread of ``metric`` over replicates, levels in increasing order.

    Returns:
      A dict of equal-length lists: ``level``, ``remaining_weights`` (mean over replicates;
      identical across replicates under magnitude pruning, which removes an exact count),
      ``mean`` and ``std`` of ``metric``, and ``n`` (replicates at that level).

    Raises:
      ValueError: no rows, or a row lacks ``metric``.
    """
    grouped = _by_level(rows)
    curve: dict[str, list] = {"level": [], "remaining_weights": [], "mean": [], "std": [],
                              "n": []}
    for level, level_rows in grouped.items():
        values = _values(level_rows, metric, level)
        curve["level"].append(level)
        curve["remaining_weights"].append(
            float(np.mean(_values(level_rows, "remaining_weights", level))))
        curve["mean"].append(float(np.mean(values)))
        curve["std"].append(_std(values))
        curve["n"].append(len(level_rows))
    return curve


def best_level(rows: Iterable[Row], select: str = "test") -> int:
    """The best pruned level: the lowest mean error over replicates.

    ``select="test"`` minimises ``test_error`` (the study's definition: it selects on the test
    set); ``select="val"`` minimises ``val_error``, available when the run held out a
    validation split. Ties go to the earliest level (the one with the most weights).

    Raises:
      ValueError: unknown ``select``, no rows, or ``select="val"`` on rows without
        ``val_error``.
    """
    if select not in ("test", "val"):
        raise ValueError(f"select must be 'test' or 'val', got {select!r}")
    rows = list(rows)
    metric = f"{select}_error"
    if select == "val" and not all(metric in r for r in rows):
        raise ValueError("select='val' needs val_error in every metrics row, and this run has "
                         "none: it held out no validation split (config.data.validation_size)")
    curve = level_curve(rows, metric)
    return curve["level"][int(np.argmin(curve["mean"]))]


def _point(curve: Mapping[str, list], i: int) -> dict[str, Any]:
    return {"level": curve["level"][i],
            "remaining_weights": round(curve["remaining_weights"][i]),
            "value": curve["mean"][i]}


def sdd_landmarks(rows: Iterable[Row], metric: str = "test_error") -> dict[str, Any]:
    """Landmarks of the sparse double descent on the mean curve of ``metric``.

    With ``e_0, e_1, ...`` the mean over replicates at levels in increasing order (decreasing
    weights) and ``e_0`` the dense (first) level:

    * ``minimum``: the level of the smallest ``e_i`` (the earliest on ties), i.e. the best
      pruned level for ``test_error``.
    * ``peak``: the level with the largest ``e_i`` strictly between the dense level and the
      minimum, provided it exceeds ``e_0`` (the error first rose); None otherwise.
    * ``collapse``: the first level after the minimum with ``e_i > e_0`` (``rule:
      "exceeds_dense"``); if none does, the level after the minimum with the largest rise
      ``e_i - e_{i-1} > 0`` (``rule: "largest_rise"``); None if the curve never rises after the
      minimum, or the minimum is the last level.
    * ``passed_minimum``: False when the minimum is the last level: the error may still be
      falling, so the minimum and the effective number of parameters are provisional.
    * ``status``: ``"minimum not yet reached"`` (not passed), ``"collapsed"`` (a later level is
      worse than the dense model), or ``"minimum passed"``.

    Each landmark is ``{"level", "remaining_weights", "value"}`` (value = mean ``metric``);
    ``dense`` is the same for the first level.
    """
    curve = level_curve(rows, metric)
    e = curve["mean"]
    i_min = int(np.argmin(e))
    last = len(e) - 1
    peak = None
    if i_min > 1:
        i_peak = 1 + int(np.argmax(e[1:i_min]))
        if e[i_peak] > e[0]:
            peak = _point(curve, i_peak)
    collapse = None
    after = range(i_min + 1, last + 1)
    exceeding = [i for i in after if e[i] > e[0]]
    if exceeding:
        collapse = {**_point(curve, exceeding[0]), "rule": "exceeds_dense"}
    elif i_min < last:
        i_rise = max(after, key=lambda i: e[i] - e[i - 1])
        if e[i_rise] > e[i_rise - 1]:
            collapse = {**_point(curve, i_rise), "rule": "largest_rise"}
    passed = i_min < last
    status = (STATUS_NOT_PASSED if not passed else
              STATUS_COLLAPSED if exceeding else STATUS_PASSED)
    return {"metric": metric, "status": status, "passed_minimum": passed,
            "dense": _point(curve, 0), "peak": peak, "minimum": _point(curve, i_min),
            "collapse": collapse}


def _finite(x: float) -> float | None:
    # JSON has no NaN, and NaN != NaN would break comparing a summary with its reloaded file.
    return float(x) if math.isfinite(x) else None


def _mean_std(values: np.ndarray) -> dict[str, float | None]:
    return {"mean": _finite(float(np.mean(values))), "std": _finite(_std(values))}


def _count(level_rows: Sequence[Row], name: str, level: int) -> int:
    # A weight count, identical across replicates under magnitude pruning.
    return round(float(np.mean(_values(level_rows, name, level))))


def _model_summary(level_rows: Sequence[Row], level: int, metrics: Sequence[str]) -> dict:
    return {"level": level,
            "remaining_weights": _count(level_rows, "remaining_weights", level),
            "prunable_remaining": _count(level_rows, "prunable_remaining", level),
            "metrics": {name: _mean_std(_values(level_rows, name, level)) for name in metrics}}


def summarise(rows: Iterable[Row], *, num_bins: int = 15, finished: bool = False
              ) -> dict[str, Any]:
    """The content of ``summary.json``: best pruned level, effective parameters, dense vs best.

    Top-level keys:

    * ``finished``, ``levels_done``, ``replicates`` (the most rows at any level);
    * ``dense_test_error``, ``best_level`` (lowest mean test error, :func:`best_level`),
      ``best_test_error``;
    * ``effective_parameters``: the best level's remaining kernel weights (output layer
      included), ``effective_prunable_parameters`` its remaining prunable ones, and
      ``total_weights`` / ``prunable_total`` of the dense network;
    * ``models``: ``dense``, ``best`` (and ``best_val`` when the rows have ``val_error``), each
      ``{"level", "remaining_weights", "prunable_remaining", "metrics": {name: {"mean",
      "std"}}}`` over replicates for the metrics of :data:`REQUIRED_METRICS` and those of
      :data:`OPTIONAL_METRICS` present in the rows (``{b}`` = ``num_bins``);
    * ``best_level_val`` when the rows have ``val_error``;
    * ``landmarks``: :func:`sdd_landmarks` of the test error;
    * ``skipped_replicates``: replicates that diverged (``"diverged": true`` in any of their
      rows, see ``train.on_divergence``); all their rows are left out of everything above.

    All values are plain ints, floats, strings, bools, None, lists and dicts (non-finite floats
    become None), so the dict equals itself after a JSON round trip.

    Raises:
      ValueError: no rows, or a row lacks a required metric or a weight count
        (``remaining_weights``, ``prunable_remaining``, ``total_weights``, ``prunable_total``).
    """
    rows = list(rows)
    skipped = sorted({r["replicate"] for r in rows if r.get("diverged")})
    rows = [r for r in rows if r["replicate"] not in skipped]
    grouped = _by_level(rows)
    required = [m.format(b=num_bins) for m in REQUIRED_METRICS]
    optional = [m.format(b=num_bins) for m in OPTIONAL_METRICS]
    metrics = required + [m for m in optional if all(m in r for r in rows)]
    dense = min(grouped)
    best = best_level(rows)
    models = {"dense": _model_summary(grouped[dense], dense, metrics),
              "best": _model_summary(grouped[best], best, metrics)}
    summary: dict[str, Any] = {
        "finished": bool(finished),
        "levels_done": len(grouped),
        "replicates": max(len(r) for r in grouped.values()),
        "dense_test_error": models["dense"]["metrics"]["test_error"]["mean"],
        "best_level": best,
        "best_test_error": models["best"]["metrics"]["test_error"]["mean"],
        "effective_parameters": models["best"]["remaining_weights"],
        "effective_prunable_parameters": models["best"]["prunable_remaining"],
        "total_weights": _count(grouped[dense], "total_weights", dense),
        "prunable_total": _count(grouped[dense], "prunable_total", dense),
        "models": models,
        "landmarks": sdd_landmarks(rows, "test_error"),
        "skipped_replicates": skipped,
    }
    if "val_error" in metrics:
        best_val = best_level(rows, select="val")
        summary["best_level_val"] = best_val
        models["best_val"] = _model_summary(grouped[best_val], best_val, metrics)
    return summary


# ---------------------------------------------------------------------------------------------
# Studies: many runs (e.g. the points of a sweep over widths, nu and seeds).


def replicate_minima(rows: Iterable[Row], metric: str = "test_error") -> list[dict[str, Any]]:
    """Per replicate of one run, the level with its own lowest ``metric`` (earliest on ties).

    Returns:
      One ``{"replicate", "level", "remaining_weights", "value"}`` per replicate, in replicate
      order: the spread of the best pruned model's size over replicates.

    Raises:
      ValueError: no rows, or a row lacks ``metric``.
    """
    by_replicate: dict[int, list[Row]] = {}
    for row in rows:
        by_replicate.setdefault(int(row["replicate"]), []).append(row)
    if not by_replicate:
        raise ValueError("no metrics rows: the run has not finished any level yet")
    minima = []
    for replicate, replicate_rows in sorted(by_replicate.items()):
        curve = level_curve(replicate_rows, metric)
        minima.append({"replicate": replicate, **_point(curve, int(np.argmin(curve["mean"])))})
    return minima


def study_record(values: Mapping[str, float], runs: Sequence[Sequence[Row]], *,
                 num_bins: int = 15) -> dict[str, Any]:
    """Dense vs best pruned model of one setting of a study, pooling its runs (seeds).

    The runs must share an architecture, so that a level has the same weights in all of them;
    their rows are pooled level by level as replicates of one run (:func:`summarise`).

    Returns:
      ``values`` (the setting, e.g. ``{"width": 300}``), ``runs``, ``replicates`` (in all runs),
      ``total_weights`` (of the dense network), ``best_level`` and ``effective_parameters`` (the
      minimum of the mean test-error curve), ``effective_parameters_replicates`` (``{"mean",
      "std"}`` over replicates of each one's own minimum, :func:`replicate_minima`), ``status``
      (of :func:`sdd_landmarks`), ``models`` (``dense`` and ``best`` as in :func:`summarise`)
      and ``curve`` (:func:`level_curve` of the test error).

    Raises:
      ValueError: no rows, or a row lacks a metric :func:`summarise` needs.
    """
    rows = [row for run in runs for row in run]
    summary = summarise(rows, num_bins=num_bins)
    sizes = np.asarray([m["remaining_weights"] for run in runs if run
                        for m in replicate_minima(run)], dtype=np.float64)
    return {"values": dict(values), "runs": len(runs), "replicates": summary["replicates"],
            "total_weights": summary["total_weights"], "best_level": summary["best_level"],
            "effective_parameters": summary["effective_parameters"],
            "effective_parameters_replicates": _mean_std(sizes),
            "status": summary["landmarks"]["status"],
            "models": {k: summary["models"][k] for k in ("dense", "best")},
            "curve": level_curve(rows, "test_error")}


def study_records(points: Iterable[tuple[Mapping[str, float], Sequence[Row]]], *,
                  num_bins: int = 15, pool: Sequence[str] = ("seed",)) -> list[dict[str, Any]]:
    """:func:`study_record` of every setting of a study, pooling the runs that differ only in
    the ``pool`` axes (the seeds); settings in the order of their first point.

    ``points`` are ``(values, rows)`` pairs, ``values`` the point's swept axes (e.g. ``{"width":
    300, "seed": 1}``); points without rows (not started) are left out.
    """
    groups: dict[tuple, tuple[dict[str, float], list[Sequence[Row]]]] = {}
    for values, rows in points:
        if not rows:
            continue
        setting = {k: v for k, v in values.items() if k not in pool}
        groups.setdefault(tuple(sorted(setting.items())), (setting, []))[1].append(rows)
    return [study_record(setting, runs, num_bins=num_bins) for setting, runs in groups.values()]
