"""The metrics of a level's row, in one registry: what each is called in tables, figures and the
progress line, and where it goes (the summary's dense vs best comparison, TensorBoard, a
report's column). Adding a metric is its computation (:mod:`imp_jax.run.evaluation`) and one
:func:`register_metric` here; every reader takes its list from :func:`names`.

A name may hold ``{b}``, the ECE bin count (``test_ece_{b}`` is ``test_ece_15`` in a run with 15
bins).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

Summary = Literal["required", "optional"]


@dataclasses.dataclass(frozen=True)
class RowMetric:
    """One metric of a level's row.

    Attributes:
      name: its key in the rows (``{b}``: the ECE bin count).
      title: how reports and figures name it.
      summary: compared between the dense and the best pruned model in ``summary.json`` and in
        study records: ``"required"`` (every row has it), ``"optional"`` (where the rows have
        it: mixture-only metrics, the validation error), or None (not compared).
      line: its label in the progress line of a level, or None for none.
      tensorboard: written to TensorBoard at the end of every level.
      column: its column's CSV name in the run and sweep reports, or None for no column.
    """

    name: str
    title: str
    summary: Summary | None = "optional"
    line: str | None = None
    tensorboard: bool = False
    column: str | None = None

    def key(self, num_bins: int) -> str:
        """The row key in a run with ``num_bins`` ECE bins."""
        return self.name.format(b=num_bins)


METRICS: dict[str, RowMetric] = {}


def register_metric(metric: RowMetric) -> RowMetric:
    """Adds ``metric`` to the registry (after the others: lists keep the order of
    registration); a metric of the same name is replaced."""
    METRICS[metric.name] = metric
    return metric


def names(num_bins: int, *, summary: Summary | None = None, line: bool = False,
          tensorboard: bool = False, column: bool = False) -> list[str]:
    """The row keys of the registered metrics with the given property, in registration order."""
    return [m.key(num_bins) for m in METRICS.values()
            if (summary is None or m.summary == summary) and (not line or m.line)
            and (not tensorboard or m.tensorboard) and (not column or m.column)]


def metric(key: str, num_bins: int) -> RowMetric:
    """The registered metric whose row key is ``key``.

    Raises:
      KeyError: no such metric.
    """
    for m in METRICS.values():
        if m.key(num_bins) == key:
            return m
    raise KeyError(f"no registered metric has the row key {key!r}")


for _metric in (
    # The progress line, TensorBoard and the reports' columns, in this order.
    RowMetric("train_error", "train error", line="train err", tensorboard=True),
    RowMetric("train_error_noisy_subset", "relabelled train error", summary=None,
              line="relabelled err", tensorboard=True),
    RowMetric("test_error", "test error", "required", line="test err", tensorboard=True,
              column="test_error"),
    RowMetric("test_ece_{b}", "ECE (clean)", "required", line="test ECE", tensorboard=True,
              column="ece_clean"),
    RowMetric("test_noisy_ece_{b}", "ECE (noisy)", "required", line="noisy ECE",
              tensorboard=True, column="ece_noisy"),
    RowMetric("test_nll", "NLL", "required", column="nll"),
    RowMetric("test_overconfidence", "overconfidence", "required", column="overconfidence"),
    RowMetric("true_abs_error", "|p - p_true|", line="|p - p_true|", column="true_abs_error"),
    RowMetric("remaining_weights", "remaining weights", summary=None, tensorboard=True),
    # Compared in the summary where the rows have them.
    RowMetric("test_brier", "Brier score"),
    RowMetric("test_mean_confidence", "mean confidence"),
    RowMetric("test_noisy_nll", "NLL (noisy)"),
    RowMetric("test_noisy_overconfidence", "overconfidence (noisy)"),
    RowMetric("val_error", "validation error"),
    RowMetric("true_kl", "KL(p_true || p)"),
    RowMetric("true_abs_error_max", "largest |p - p_true|"),
    RowMetric("true_abs_error_q99", "99th percentile of |p - p_true|"),
    RowMetric("true_noisy_abs_error", "|p - p_true| (noisy)"),
    RowMetric("true_noisy_kl", "KL(p_true || p) (noisy)"),
    RowMetric("fresh_ece_{b}", "ECE (fresh points)"),
    RowMetric("fresh_overconfidence", "overconfidence (fresh points)"),
):
    register_metric(_metric)
