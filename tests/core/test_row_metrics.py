"""The metric registry: one entry makes a new metric part of the summary, the progress line,
TensorBoard and the reports."""

import pytest

from imp_jax.core import analysis, row_metrics
from imp_jax.study import report
from tests.helpers import make_rows


@pytest.fixture
def registered():
    before = dict(row_metrics.METRICS)
    yield row_metrics.register_metric(row_metrics.RowMetric(
        "test_margin", "margin", "required", line="margin", tensorboard=True, column="margin"))
    row_metrics.METRICS.clear()
    row_metrics.METRICS.update(before)


def test_the_study_lists_come_from_the_registry():
    assert row_metrics.names(15, summary="required") == [
        "test_error", "test_ece_15", "test_noisy_ece_15", "test_nll", "test_overconfidence"]
    assert row_metrics.names(15, line=True) == [
        "train_error", "train_error_noisy_subset", "test_error", "test_ece_15",
        "test_noisy_ece_15", "true_abs_error"]
    assert report.metric_columns()[:3] == [("test error", "test_error"),
                                           ("ECE (clean)", "test_ece_{b}"),
                                           ("ECE (noisy)", "test_noisy_ece_{b}")]
    assert row_metrics.metric("fresh_ece_10", 10).title == "ECE (fresh points)"
    with pytest.raises(KeyError, match="test_bogus"):
        row_metrics.metric("test_bogus", 15)


def test_a_registered_metric_reaches_the_summary_and_the_reports(registered):
    rows = make_rows([0.3, 0.2, 0.25], test_margin=[1.0, 2.0, 3.0])
    summary = analysis.summarise(rows)
    assert summary["models"]["dense"]["metrics"]["test_margin"]["mean"] == 1.0
    assert ("margin", "test_margin") in report.metric_columns()
    assert report.csv_names()["margin"] == "margin"
    assert "test_margin" in row_metrics.names(15, tensorboard=True)
    with pytest.raises(ValueError, match="test_margin"):
        analysis.summarise(make_rows([0.3, 0.2]))  # required, and the rows lack it
