"""imp_jax.core.analysis on hand-built metrics rows (no training)."""

import json
import math
import random

import hypothesis
import hypothesis.strategies as st
import numpy as np
import pytest

from imp_jax.core import analysis, records
from tests.helpers import SDD, make_rows


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
    assert analysis.best_level(make_rows([[0.3, 0.3], [0.05, 0.6], [0.2, 0.2], [0.3, 0.3]])) == 2
    assert analysis.best_level(make_rows([0.3, 0.2, 0.2, 0.25])) == 1
    # Still falling at the last level: no best pruned model yet.
    assert analysis.best_level(make_rows([0.3, 0.2, 0.1])) is None


def test_best_level_on_validation_error():
    rows = make_rows(SDD, val_error=[0.3, 0.32, 0.35, 0.1, 0.2, 0.25, 0.3, 0.3, 0.4])
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
    assert marks["minimum"] is None and marks["collapse"] is None
    assert marks["candidate"]["level"] == 4 and marks["lowest"]["level"] == 4
    assert marks["peak"]["level"] == 1
    monotone = analysis.sdd_landmarks(make_rows([0.3, 0.25, 0.2]))
    assert monotone["peak"] is None and monotone["status"] == "minimum not yet reached"


def test_landmarks_collapse_by_largest_rise_when_never_worse_than_dense():
    marks = analysis.sdd_landmarks(make_rows([0.30, 0.35, 0.20, 0.10, 0.12, 0.20, 0.22]))
    assert marks["status"] == "minimum passed" and marks["passed_minimum"]
    assert marks["collapse"]["level"] == 5 and marks["collapse"]["rule"] == "largest_rise"
    # A flat end within the tolerance has not yet risen after its minimum.
    flat = analysis.sdd_landmarks(make_rows([0.3, 0.1, 0.1005]))
    assert flat["minimum"] is None and flat["candidate"]["level"] == 1
    assert flat["status"] == "minimum not yet reached" and flat["peak"] is None


def test_the_dense_network_is_never_the_best_pruned_model():
    marks = analysis.sdd_landmarks(make_rows([0.1, 0.2, 0.3]), metric="test_error")
    assert marks["minimum"] is None and marks["peak"] is None and marks["collapse"] is None
    assert marks["status"] == analysis.STATUS_NONE and marks["lowest"]["level"] == 0
    # Flat within the tolerance, then a rise: still pruning only hurt.
    found = analysis.sparse_minimum([0.10, 0.101, 0.102, 0.20])
    assert found.best is None and found.only_hurt
    assert analysis.best_level(make_rows([0.10, 0.101, 0.102, 0.20])) is None


def test_landmarks_on_another_metric():
    nll = analysis.sdd_landmarks(make_rows([0.1, 0.2, 0.3], test_nll=[0.9, 0.4, 0.5]),
                                 metric="test_nll")
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
    rows = make_rows([0.3, 0.2, 0.25, 0.3], val_error=[0.3, 0.35, 0.1, 0.2],
                     test_nll=[float("nan"), 0.4, float("inf"), 0.5])
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


def test_summarise_before_the_minimum_names_no_best_model():
    summary = analysis.summarise(make_rows([0.3, 0.25, 0.2], val_error=[0.3, 0.2, 0.1]))
    assert summary["best_level"] is None and summary["effective_parameters"] is None
    assert summary["best_test_error"] is None and "best" not in summary["models"]
    assert summary["best_level_val"] is None and "best_val" not in summary["models"]
    assert summary["lowest_error_level"] == 2
    assert summary["lowest_test_error"] == pytest.approx(0.2)
    assert summary["landmarks"]["status"] == "minimum not yet reached"


# -- the best pruned model on the study's curve shapes ------------------------------------------

# Mean test error per level (levels in order, weights falling), with the level the study would
# name the best pruned model.
WIDE = ([0.020, 0.021, 0.023, 0.026, 0.029, 0.031, 0.030, 0.028, 0.026, 0.025, 0.024, 0.025,
         0.028, 0.040, 0.080, 0.200, 0.500], 10)
NARROW = ([0.060, 0.050, 0.042, 0.036, 0.033, 0.031, 0.034, 0.045, 0.090, 0.300, 0.700], 5)
MEMORISING = ([0.060, 0.062, 0.059, 0.061, 0.058, 0.060, 0.066, 0.075, 0.080, 0.060, 0.040,
               0.028, 0.022, 0.020, 0.023, 0.035, 0.090, 0.400], 13)
# The XOR mixture at nu=0.6, P=500: dense 0.208, a dip to 0.205 at level 1, a peak of 0.235 at
# level 10, the second descent's minimum 0.206 at level 16, then the collapse.
XOR = ([0.208, 0.205, 0.209, 0.212, 0.216, 0.220, 0.224, 0.228, 0.231, 0.233, 0.235, 0.230,
        0.224, 0.218, 0.213, 0.209, 0.206, 0.215, 0.240, 0.300, 0.420], 16)


@pytest.mark.parametrize(("curve", "best"), [WIDE, NARROW, MEMORISING, XOR],
                         ids=["wide", "narrow", "memorising", "xor"])
def test_best_pruned_model_on_the_study_shapes(curve, best):
    found = analysis.sparse_minimum(curve)
    assert found.best == best
    summary = analysis.summarise(make_rows(curve))
    assert summary["best_level"] == best
    assert summary["effective_parameters"] == round(1000 * 0.8**best)
    assert summary["lowest_error_level"] == int(min(range(len(curve)), key=curve.__getitem__))


def test_wide_network_best_pruned_model_is_on_the_sparse_side():
    marks = analysis.sdd_landmarks(make_rows(WIDE[0]))
    assert marks["lowest"]["level"] == 0 and marks["minimum"]["level"] == 10
    assert marks["peak"]["level"] == 5 and marks["status"] == "collapsed"
    xor = analysis.sdd_landmarks(make_rows(XOR[0]))
    assert xor["lowest"]["level"] == 1 and xor["peak"]["level"] == 10


def test_a_curve_that_has_not_passed_its_minimum_names_none():
    for curve, best in (WIDE, NARROW, MEMORISING, XOR):
        # Cut just after the minimum: the error has not risen yet.
        found = analysis.sparse_minimum(curve[:best + 1])
        assert found.best is None and found.candidate == best
    # Still before the second descent: the dense side is the candidate, not a best model.
    assert analysis.sparse_minimum(MEMORISING[0][:9]).best is not None  # it rose after level 4
    assert analysis.sparse_minimum(MEMORISING[0][:12]).best is None  # falling at the end


def test_wiggles_within_the_replicate_spread_make_no_peak():
    # The rise to 0.029 is within the spread of 0.004: no peak, the global minimum wins.
    curve = [0.030, 0.026, 0.029, 0.024, 0.022, 0.040, 0.200]
    assert analysis.sparse_minimum(curve, [0.004] * 7).best == 4
    assert analysis.sparse_minimum(curve, [0.004] * 7).peak is None
    # Below the spread, a flat end does not confirm the minimum.
    assert analysis.sparse_minimum([0.3, 0.2, 0.203], [0.005] * 3).best is None
    assert analysis.sparse_minimum([0.3, 0.2, 0.203]).best == 1  # floor 0.002 only


@hypothesis.settings(max_examples=60, deadline=None)
@hypothesis.given(shape=st.sampled_from([WIDE, NARROW, MEMORISING, XOR]),
                  sigma=st.floats(0.0, 0.002), seed=st.integers(0, 2**32 - 1))
def test_best_pruned_model_under_replicate_noise(shape, sigma, seed):
    """Three noisy replicates of a shape: the best pruned model stays in the second descent,
    at a level whose noise-free error is within the noise of the true minimum."""
    curve, best = shape
    rng = np.random.default_rng(seed)
    errors = np.asarray(curve)[:, None] + rng.normal(0.0, sigma, (len(curve), 3))
    summary = analysis.summarise(make_rows(errors.tolist()))
    found = summary["best_level"]
    assert found is not None
    peak = analysis.sparse_minimum(curve).peak or 0
    assert peak < found < len(curve) - 1
    assert curve[found] <= curve[best] + 4 * sigma + 1e-12


def test_typed_records_read_and_write_a_summary_unchanged():
    rows = make_rows(SDD, val_error=SDD)
    summary = analysis.summarise(rows)
    typed = records.RunSummary.from_json(json.loads(json.dumps(summary)))
    assert typed.to_json() == summary
    assert typed.best_level == summary["best_level"] and typed.best_level_val == 5
    assert typed.models["best"].metric("test_error").mean == min(SDD)
    assert typed.status == summary["landmarks"]["status"]
