"""Analysis of a run's metrics rows: pruning curves, the best pruned model, sparse double descent.

Every function takes the rows of ``metrics.jsonl`` (dicts with at least ``level``,
``replicate`` and ``remaining_weights``; one row per (replicate, level)) and aggregates over
replicates with the mean and the sample standard deviation (``ddof=1``; 0 with one replicate).
Pruning removes weights at every level, so levels in increasing order are models with
decreasing numbers of weights. Nothing here needs JAX: the functions are usable on rows
collected from many runs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from imp_jax.core import row_metrics
from imp_jax.core.records import ModelRecord, RunSummary, Stat, StudyRecord

Row = Mapping[str, Any]

STATUS_NOT_PASSED = "minimum not yet reached"
STATUS_PASSED = "minimum passed"
STATUS_COLLAPSED = "collapsed"
STATUS_NONE = "no sparse minimum: pruning only hurt"


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


# The smallest difference between the mean errors of two levels that counts as a rise or a fall:
# the larger of the two levels' replicate spreads (sample std), and at least this floor, so
# that wiggles of the size of the replicate spread (or, with one replicate, of a few test
# examples) make no peaks and no minima.
TOLERANCE_FLOOR = 0.002


@dataclasses.dataclass(frozen=True)
class SparseMinimum:
    """Where the best pruned model lies on a mean error curve (indices into its levels).

    Attributes:
      best: the best pruned model (the minimum of the second descent), or None while the curve
        has not yet risen by more than the tolerance after its candidate: the error may still
        be falling, so no level is named.
      candidate: the level that would be the best pruned model if the curve rose after it.
      peak: the top of the rise the second descent falls from; None if the error fell from the
        dense network at once (no rise, by more than the tolerance, before the fall).
      lowest: the lowest error of the whole curve (the dense network for wide ones).
      only_hurt: the error never fell and rose after its lowest level: there is no best pruned
        model, and pruning on will not make one.
    """

    best: int | None
    candidate: int
    peak: int | None
    lowest: int
    only_hurt: bool = False


def _tolerance(std: np.ndarray, i: int, j: int, floor: float) -> float:
    return max(floor, float(std[i]), float(std[j]))


def sparse_minimum(mean: Sequence[float], std: Sequence[float] | None = None, *,
                   floor: float = TOLERANCE_FLOOR) -> SparseMinimum:
    """The study's best pruned model on a mean error curve, levels in order (weights falling).

    The best pruned model is the minimum of the sparse double descent's second descent: the
    lowest error after the error's peak and before the collapse. The peak is the level from
    which the error falls the most, ``e_p - min(e_j, j > p)``, among the levels from which it
    falls by more than the tolerance (see :data:`TOLERANCE_FLOOR`; ``std`` is the replicate
    spread per level, zeros when None); the dense level itself when pruning helped at once. The
    best pruned model is the lowest level after the peak (the earliest on ties). Where no
    level is followed by such a fall, the curve only rises or is flat: the lowest level is the
    candidate, and there is no best pruned model (the dense network never is one). A candidate
    is named the best only once a later level is worse by more than the tolerance; before that
    the minimum is not yet reached.

    On the shapes of the study: a wide network (dense lowest, a rise to a peak, a second descent
    to a minimum above the dense error, the collapse) gives that minimum, not the dense network;
    a narrow one (pruning helps at once, then the collapse) its global minimum; a memorising one
    (a plateau, a peak, a deep second descent) the bottom of the second descent.

    Raises:
      ValueError: an empty curve, or ``std`` of another length.
    """
    e = np.asarray(mean, np.float64)
    s = np.zeros_like(e) if std is None else np.nan_to_num(np.asarray(std, np.float64))
    if e.size == 0 or s.shape != e.shape:
        raise ValueError(f"need a non-empty curve and one std per level, got {e.size} means "
                         f"and {s.size} stds")
    lowest = int(np.argmin(e))
    drops = []
    for p in range(e.size - 1):
        j = p + 1 + int(np.argmin(e[p + 1:]))
        if e[p] - e[j] > _tolerance(s, p, j, floor):
            drops.append((e[p] - e[j], -p, p, j))
    top, candidate = (0, lowest) if not drops else max(drops)[2:]
    before = int(np.argmin(e[:top])) if top else 0
    # The fall starts from a peak only if the error rose to it; else it is the first descent.
    peak = top if top and e[top] - e[before] > _tolerance(s, before, top, floor) else None
    rises = [k for k in range(candidate + 1, e.size)
             if e[k] - e[candidate] > _tolerance(s, candidate, k, floor)]
    # Without a fall the curve only rises (or is flat): pruning only hurt, and the dense
    # network is never the best pruned model, so there is none.
    return SparseMinimum(best=candidate if rises and drops else None, candidate=candidate,
                         peak=peak, lowest=lowest, only_hurt=bool(rises) and not drops)


def best_level(rows: Iterable[Row], select: str = "test") -> int | None:
    """The best pruned level (see :func:`sparse_minimum`) of the mean error curve, or None
    while the minimum is not yet reached.

    ``select="test"`` uses ``test_error`` (the study's definition: it selects on the test
    set); ``select="val"`` uses ``val_error``, available when the run held out a validation
    split.

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
    best = sparse_minimum(curve["mean"], curve["std"]).best
    return None if best is None else curve["level"][best]


def levels_past_best(rows: Iterable[Row]) -> tuple[int, int] | None:
    """The best pruned level (:func:`best_level` on the test error) and how many levels the
    rows hold past it; None while there is no best pruned model."""
    curve = level_curve(rows, "test_error")
    best = sparse_minimum(curve["mean"], curve["std"]).best
    return None if best is None else (curve["level"][best], len(curve["level"]) - 1 - best)


def _point(curve: Mapping[str, list], i: int | None) -> dict[str, Any] | None:
    if i is None:
        return None
    return {"level": curve["level"][i],
            "remaining_weights": round(curve["remaining_weights"][i]),
            "value": curve["mean"][i]}


def sdd_landmarks(rows: Iterable[Row], metric: str = "test_error") -> dict[str, Any]:
    """Landmarks of the sparse double descent on the mean curve of ``metric``.

    With ``e_0, e_1, ...`` the mean over replicates at levels in increasing order (decreasing
    weights) and ``e_0`` the dense (first) level, and the levels of :func:`sparse_minimum`:

    * ``minimum``: the best pruned model (the second descent's minimum), None while not reached;
      ``candidate``: the level that will be it if the error rises after it;
    * ``peak``: the top of the rise before the second descent, None if there was no rise;
    * ``lowest``: the lowest ``e_i`` of the whole curve (the dense model for wide networks);
    * ``collapse``: the first level after the minimum with ``e_i > e_0`` (``rule:
      "exceeds_dense"``); if none does, the level after the minimum with the largest rise
      ``e_i - e_{i-1} > 0`` (``rule: "largest_rise"``); None while the minimum is not reached;
    * ``passed_minimum``: whether the minimum is reached;
    * ``status``: ``"minimum not yet reached"``, ``"collapsed"`` (a later level is worse than
      the dense model), ``"minimum passed"``, or :data:`STATUS_NONE` (the error only rose);
    * ``tolerance``: how large a rise or fall must be to count (see :data:`TOLERANCE_FLOOR`).

    Each landmark is ``{"level", "remaining_weights", "value"}`` (value = mean ``metric``);
    ``dense`` is the same for the first level.
    """
    curve = level_curve(rows, metric)
    e = curve["mean"]
    found = sparse_minimum(e, curve["std"])
    collapse = None
    exceeding = []
    if found.best is not None:
        after = range(found.best + 1, len(e))
        exceeding = [i for i in after if e[i] > e[0]]
        if exceeding:
            collapse = {**_point(curve, exceeding[0]), "rule": "exceeds_dense"}
        else:
            i_rise = max(after, key=lambda i: e[i] - e[i - 1])
            collapse = {**_point(curve, i_rise), "rule": "largest_rise"}
    status = (STATUS_NONE if found.only_hurt else STATUS_NOT_PASSED if found.best is None else
              STATUS_COLLAPSED if exceeding else STATUS_PASSED)
    return {"metric": metric, "status": status, "passed_minimum": found.best is not None,
            "dense": _point(curve, 0), "peak": _point(curve, found.peak),
            "minimum": _point(curve, found.best), "candidate": _point(curve, found.candidate),
            "lowest": _point(curve, found.lowest), "collapse": collapse,
            "tolerance": {"floor": TOLERANCE_FLOOR,
                          "rule": "max(floor, replicate std of either level)"}}


def _finite(x: float) -> float | None:
    # JSON has no NaN, and NaN != NaN would break comparing a summary with its reloaded file.
    return float(x) if math.isfinite(x) else None


def _mean_std(values: np.ndarray) -> Stat:
    return Stat(_finite(float(np.mean(values))), _finite(_std(values)))


def _count(level_rows: Sequence[Row], name: str, level: int) -> int:
    # A weight count, identical across replicates under magnitude pruning.
    return round(float(np.mean(_values(level_rows, name, level))))


def _model_summary(level_rows: Sequence[Row], level: int, metrics: Sequence[str]
                   ) -> ModelRecord:
    return ModelRecord(level, _count(level_rows, "remaining_weights", level),
                       _count(level_rows, "prunable_remaining", level),
                       {name: _mean_std(_values(level_rows, name, level)) for name in metrics})


def summarise(rows: Iterable[Row], *, num_bins: int = 15, finished: bool = False
              ) -> dict[str, Any]:
    """The content of ``summary.json`` (a :class:`imp_jax.core.records.RunSummary` as JSON):
    best pruned level, effective parameters, dense vs best.

    Top-level keys:

    * ``finished``, ``levels_done``, ``replicates`` (the most rows at any level);
    * ``dense_test_error``, ``best_level`` (the study's best pruned model: the minimum of the
      second descent, :func:`best_level`), ``best_test_error``;
    * ``effective_parameters``: the best level's remaining kernel weights (output layer
      included), ``effective_prunable_parameters`` its remaining prunable ones, and
      ``total_weights`` / ``prunable_total`` of the dense network;
    * ``lowest_error_level`` and ``lowest_test_error``: the lowest mean test error of the whole
      path (the dense network, for wide ones);
    * ``models``: ``dense``, ``best`` (and ``best_val`` when the rows have ``val_error``), each
      ``{"level", "remaining_weights", "prunable_remaining", "metrics": {name: {"mean",
      "std"}}}`` over replicates for the required metrics of
      :mod:`imp_jax.core.row_metrics` and its optional ones that the rows have;
    * ``best_level_val`` when the rows have ``val_error``;
    * ``landmarks``: :func:`sdd_landmarks` of the test error;
    * ``skipped_replicates``: replicates that diverged (``"diverged": true`` in any of their
      rows, see ``train.on_divergence``); all their rows are left out of everything above.

    While the minimum is not yet reached (``landmarks["status"]``), ``best_level``,
    ``best_test_error`` and the effective parameters are None and ``models`` has no ``best``
    (likewise ``best_level_val`` and ``best_val``).

    All values are plain ints, floats, strings, bools, None, lists and dicts (non-finite floats
    become None), so the dict equals itself after a JSON round trip.

    Raises:
      ValueError: no rows, or a row lacks a required metric or a weight count
        (``remaining_weights``, ``prunable_remaining``, ``total_weights``, ``prunable_total``).
    """
    return run_summary(rows, num_bins=num_bins, finished=finished).to_json()


def run_summary(rows: Iterable[Row], *, num_bins: int = 15, finished: bool = False
                ) -> RunSummary:
    """:func:`summarise` as a typed record (the same ValueErrors)."""
    rows = list(rows)
    skipped = sorted({r["replicate"] for r in rows if r.get("diverged")})
    rows = [r for r in rows if r["replicate"] not in skipped]
    grouped = _by_level(rows)
    required = row_metrics.names(num_bins, summary="required")
    optional = row_metrics.names(num_bins, summary="optional")
    metrics = required + [m for m in optional if all(m in r for r in rows)]
    dense = min(grouped)
    landmarks = sdd_landmarks(rows, "test_error")
    best = (landmarks["minimum"] or {}).get("level")
    models = {"dense": _model_summary(grouped[dense], dense, metrics)}
    if best is not None:
        models["best"] = _model_summary(grouped[best], best, metrics)
    best_model = models.get("best")
    extra = {}
    if "val_error" in metrics:
        extra["best_level_val"] = best_val = best_level(rows, select="val")
        if best_val is not None:
            models["best_val"] = _model_summary(grouped[best_val], best_val, metrics)
    return RunSummary(
        finished=bool(finished),
        levels_done=len(grouped),
        replicates=max(len(r) for r in grouped.values()),
        dense_test_error=models["dense"].metrics["test_error"].mean,
        best_level=best,
        best_test_error=best_model.metrics["test_error"].mean if best_model else None,
        effective_parameters=best_model.remaining_weights if best_model else None,
        effective_prunable_parameters=best_model.prunable_remaining if best_model else None,
        lowest_error_level=landmarks["lowest"]["level"],
        lowest_test_error=_finite(landmarks["lowest"]["value"]),
        total_weights=_count(grouped[dense], "total_weights", dense),
        prunable_total=_count(grouped[dense], "prunable_total", dense),
        models=models,
        landmarks=landmarks,
        skipped_replicates=skipped,
        extra=extra,
    )


# ---------------------------------------------------------------------------------------------
# Studies: many runs (e.g. the points of a sweep over widths, nu and seeds).


def replicate_minima(rows: Iterable[Row], metric: str = "test_error") -> list[dict[str, Any]]:
    """Per replicate of one run, its own best pruned level (:func:`sparse_minimum` of its own
    ``metric`` curve, with the tolerance floor alone since one replicate has no spread).

    Returns:
      One ``{"replicate", "level", "remaining_weights", "value"}`` per replicate, in replicate
      order (the spread of the best pruned model's size over replicates); ``level`` and the rest
      are None for a replicate whose minimum is not yet reached.

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
        point = _point(curve, sparse_minimum(curve["mean"]).best)
        minima.append({"replicate": replicate,
                       **(point or dict.fromkeys(("level", "remaining_weights", "value")))})
    return minima


def study_record(values: Mapping[str, float], runs: Sequence[Sequence[Row]], *,
                 num_bins: int = 15) -> StudyRecord:
    """Dense vs best pruned model of one setting of a study, pooling its runs (seeds).

    The runs must share an architecture, so that a level has the same weights in all of them;
    their rows are pooled level by level as replicates of one run (:func:`summarise`). The
    best pruned model is the minimum of the mean test-error curve (:func:`sparse_minimum`); the
    per-replicate effective parameters come from :func:`replicate_minima`.

    Raises:
      ValueError: no rows, or a row lacks a metric :func:`summarise` needs.
    """
    rows = [row for run in runs for row in run]
    summary = run_summary(rows, num_bins=num_bins)
    sizes = np.asarray([m["remaining_weights"] for run in runs if run
                        for m in replicate_minima(run) if m["level"] is not None],
                       dtype=np.float64)
    return StudyRecord(
        values=dict(values), runs=len(runs), replicates=summary.replicates,
        total_weights=summary.total_weights, best_level=summary.best_level,
        effective_parameters=summary.effective_parameters,
        lowest_error_level=summary.lowest_error_level,
        effective_parameters_replicates=_mean_std(sizes) if sizes.size else Stat(None, None),
        status=summary.status,
        models={k: v for k, v in summary.models.items() if k in ("dense", "best")},
        curve=level_curve(rows, "test_error"))


def study_records(points: Iterable[tuple[Mapping[str, float], Sequence[Row]]], *,
                  num_bins: int = 15, pool: Sequence[str] = ("seed",)) -> list[StudyRecord]:
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


def best_small_full(records: Sequence[StudyRecord], axis: str = "width"
                    ) -> list[dict[str, Any]]:
    """The study's "best small full" networks: per setting of the axes other than ``axis``,
    the record (:func:`study_record`) whose *dense* network has the lowest mean test error.

    Returns:
      One ``{"values": the other axes' values, "record": the record}`` per setting, in the
      order of their first record; records without ``axis`` are left out.
    """
    groups: dict[tuple, list[StudyRecord]] = {}
    for r in records:
        if axis in r.values:
            others = tuple((k, v) for k, v in r.values.items() if k != axis)
            groups.setdefault(others, []).append(r)
    return [{"values": dict(others),
             "record": min(group, key=lambda r: r.dense.metrics["test_error"].mean)}
            for others, group in groups.items()]
