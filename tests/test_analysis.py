"""imp_jax.analysis on hand-built metrics rows (no training)."""

import json
import math
import random

import pytest

from imp_jax import analysis


def make_rows(test_errors, *, weights=1000, **per_level):
    """Rows of a run whose level L has ``test_errors[L]`` (a float, or one per replicate).

    Other metrics are given per level as ``name=[...]`` (floats or per-replicate lists);
    unnamed required metrics get fixed values. Each level keeps 80% of the previous weights.
    """
    rows = []
    for level, errors in enumerate(test_errors):
        errors = errors if isinstance(errors, list) else [errors]
        remaining = round(weights * 0.8**level)
        for r, error in enumerate(errors):
            row = {"level": level, "replicate": r, "remaining_weights": remaining,
                   "total_weights": weights, "prunable_remaining": remaining - 10,
                   "prunable_total": weights - 10, "test_error": error, "train_error": 0.1,
                   "test_nll": 0.5, "test_ece_15": 0.05, "test_noisy_ece_15": 0.04,
                   "test_overconfidence": 0.02}
            for name, values in per_level.items():
                value = values[level]
                row[name] = value[r] if isinstance(value, list) else value
            rows.append(row)
    return rows


SDD = [0.20, 0.25, 0.30, 0.22, 0.15, 0.12, 0.18, 0.26, 0.35]


def test_level_curve_mean_std_over_replicates_in_level_order():
    rows = make_rows([[0.1, 0.2, 0.3], [0.4, 0.4, 0.4]])
    random.Random(0).shuffle(rows)
    curve = analysis.level_curve(rows, "test_error")
    assert curve["level"] == [0, 1]
    assert curve["remaining_weights"] == [1000, 800]
    assert curve["mean"] == pytest.approx([0.2, 0.4])
    assert curve["std"] == pytest.approx([0.1, 0.0])  # sample std (ddof=1)
    assert curve["n"] == [3, 3]
    assert analysis.level_curve(make_rows([0.3]), "test_error")["std"] == [0.0]


def test_level_curve_missing_metric():
    with pytest.raises(ValueError, match="'val_error' is missing from the rows of level 0"):
        analysis.level_curve(make_rows([0.1]), "val_error")
    with pytest.raises(ValueError, match="no metrics rows"):
        analysis.level_curve([], "test_error")


def test_best_level_lowest_mean_test_error_ties_to_the_denser_level():
    assert analysis.best_level(make_rows(SDD)) == 5
    # Replicate means decide, not single replicates: level 1 has the single lowest value.
    assert analysis.best_level(make_rows([[0.3, 0.3], [0.05, 0.6], [0.2, 0.2]])) == 2
    assert analysis.best_level(make_rows([0.3, 0.2, 0.2, 0.25])) == 1


def test_best_level_on_validation_error():
    rows = make_rows(SDD, val_error=[0.3, 0.3, 0.3, 0.1, 0.2, 0.25, 0.3, 0.3, 0.4])
    assert analysis.best_level(rows, select="val") == 3
    assert analysis.best_level(rows, select="test") == 5
    with pytest.raises(ValueError, match="held out no validation split"):
        analysis.best_level(make_rows(SDD), select="val")
    with pytest.raises(ValueError, match="select must be"):
        analysis.best_level(rows, select="train")


def test_landmarks_of_a_sparse_double_descent():
    marks = analysis.sdd_landmarks(make_rows(SDD))
    assert marks["passed_minimum"] and marks["status"] == "collapsed"
    assert marks["dense"] == {"level": 0, "remaining_weights": 1000, "value": 0.20}
    assert marks["peak"]["level"] == 2 and marks["peak"]["value"] == pytest.approx(0.30)
    assert marks["minimum"] == {"level": 5, "remaining_weights": round(1000 * 0.8**5),
                                "value": 0.12}
    # Level 6 (0.18) rises but stays below the dense error; level 7 (0.26) exceeds it.
    assert marks["collapse"]["level"] == 7 and marks["collapse"]["rule"] == "exceeds_dense"


def test_landmarks_of_a_run_still_falling():
    marks = analysis.sdd_landmarks(make_rows([0.30, 0.35, 0.25, 0.20, 0.15]))
    assert not marks["passed_minimum"]
    assert marks["status"] == "minimum not yet reached"
    assert marks["minimum"]["level"] == 4 and marks["collapse"] is None
    assert marks["peak"]["level"] == 1
    monotone = analysis.sdd_landmarks(make_rows([0.3, 0.25, 0.2]))
    assert monotone["peak"] is None and monotone["status"] == "minimum not yet reached"


def test_landmarks_collapse_by_largest_rise_when_never_worse_than_dense():
    marks = analysis.sdd_landmarks(make_rows([0.30, 0.35, 0.20, 0.10, 0.12, 0.20, 0.22]))
    assert marks["status"] == "minimum passed" and marks["passed_minimum"]
    assert marks["collapse"]["level"] == 5 and marks["collapse"]["rule"] == "largest_rise"
    flat = analysis.sdd_landmarks(make_rows([0.3, 0.1, 0.1]))
    assert flat["minimum"]["level"] == 1 and flat["collapse"] is None
    assert flat["status"] == "minimum passed" and flat["peak"] is None


def test_landmarks_on_another_metric_and_minimum_at_the_dense_level():
    marks = analysis.sdd_landmarks(make_rows([0.1, 0.2, 0.3]), metric="test_error")
    assert marks["minimum"]["level"] == 0 and marks["peak"] is None
    assert marks["collapse"]["level"] == 1
    nll = analysis.sdd_landmarks(make_rows([0.1, 0.2], test_nll=[0.9, 0.4]), metric="test_nll")
    assert nll["metric"] == "test_nll" and nll["minimum"]["level"] == 1


def test_summarise_keys_values_and_json_round_trip():
    errors = [[e, e + 0.02] for e in SDD]
    rows = make_rows(errors, true_abs_error=[[0.3, 0.32]] * 5 + [[0.1, 0.12]] * 4,
                     true_kl=[0.2] * 9)
    summary = analysis.summarise(rows, finished=True)
    assert json.loads(json.dumps(summary)) == summary
    assert summary["finished"] and summary["levels_done"] == 9 and summary["replicates"] == 2
    assert summary["best_level"] == 5
    assert summary["best_test_error"] == pytest.approx(0.13)
    assert summary["dense_test_error"] == pytest.approx(0.21)
    assert summary["effective_parameters"] == round(1000 * 0.8**5)
    assert summary["effective_prunable_parameters"] == round(1000 * 0.8**5) - 10
    assert summary["total_weights"] == 1000 and summary["prunable_total"] == 990
    dense, best = summary["models"]["dense"], summary["models"]["best"]
    assert (dense["level"], best["level"]) == (0, 5)
    assert dense["remaining_weights"] == 1000
    assert best["metrics"]["true_abs_error"]["mean"] == pytest.approx(0.11)
    assert best["metrics"]["true_abs_error"]["std"] == pytest.approx(math.sqrt(2) * 0.01)
    assert set(best["metrics"]) >= {"test_error", "test_nll", "test_ece_15",
                                    "test_noisy_ece_15", "test_overconfidence", "true_kl"}
    assert "val_error" not in best["metrics"] and "best_level_val" not in summary
    assert summary["landmarks"]["minimum"]["level"] == 5


def test_summarise_with_validation_and_non_finite_values():
    rows = make_rows([0.3, 0.2, 0.25], val_error=[0.3, 0.35, 0.1],
                     test_nll=[float("nan"), 0.4, float("inf")])
    summary = analysis.summarise(rows)
    assert not summary["finished"]
    assert summary["best_level"] == 1 and summary["best_level_val"] == 2
    assert summary["models"]["best_val"]["level"] == 2
    assert summary["models"]["dense"]["metrics"]["test_nll"]["mean"] is None
    assert json.loads(json.dumps(summary, allow_nan=False)) == summary


def test_summarise_errors():
    with pytest.raises(ValueError, match="no metrics rows"):
        analysis.summarise([])
    with pytest.raises(ValueError, match="test_ece_10"):
        analysis.summarise(make_rows([0.1]), num_bins=10)
