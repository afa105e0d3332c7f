"""Typed records of results: a level's row, a model of a run or a setting (the dense network, the
best pruned one), a run's summary, and a study's record of one setting.

Rows and summaries are stored as JSON (``metrics.jsonl``, ``summary.json``); the records read
them (``from_json``) and write them back unchanged (``to_json``), so the files keep their format
and the code names its fields. A row's metrics are open-ended (the metric registry,
:mod:`imp_jax.core.row_metrics`), so a row is a typed dict rather than a class.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypedDict


class LevelRow(TypedDict, total=False):
    """One replicate at the end of one level (a line of ``metrics.jsonl``): these fields, the
    metrics of :mod:`imp_jax.core.row_metrics` that the task has, and ``time_*_s`` timings."""

    level: int
    replicate: int
    remaining_weights: int
    total_weights: int
    prunable_remaining: int
    prunable_total: int
    sparsity: float
    epochs: int
    diverged: bool


@dataclasses.dataclass(frozen=True)
class Stat:
    """A metric's mean and sample standard deviation over replicates (None: not finite, or a
    single replicate's std)."""

    mean: float | None
    std: float | None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Stat:
        return cls(d["mean"], d["std"])

    def to_json(self) -> dict[str, float | None]:
        return {"mean": self.mean, "std": self.std}


@dataclasses.dataclass(frozen=True)
class ModelRecord:
    """One model of a run or a setting at one level: its weight counts and its metrics over
    the replicates (names as in the rows, e.g. ``test_ece_15``)."""

    level: int
    remaining_weights: int
    prunable_remaining: int
    metrics: dict[str, Stat]

    def metric(self, name: str) -> Stat | None:
        """The metric ``name``, or None where the rows had none."""
        return self.metrics.get(name)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ModelRecord:
        return cls(d["level"], d["remaining_weights"], d["prunable_remaining"],
                   {k: Stat.from_json(v) for k, v in d["metrics"].items()})

    def to_json(self) -> dict[str, Any]:
        return {"level": self.level, "remaining_weights": self.remaining_weights,
                "prunable_remaining": self.prunable_remaining,
                "metrics": {k: v.to_json() for k, v in self.metrics.items()}}


def _models(d: Mapping[str, Any]) -> dict[str, ModelRecord]:
    return {k: ModelRecord.from_json(v) for k, v in d.items()}


@dataclasses.dataclass(frozen=True)
class RunSummary:
    """A run's ``summary.json`` (:func:`imp_jax.core.analysis.summarise` says what each field
    means). ``models`` holds ``dense``, ``best`` once the minimum is reached, and ``best_val``
    for runs with a validation split; ``extra`` the other fields (``best_level_val``, and those
    of newer versions), kept as read."""

    finished: bool
    levels_done: int
    replicates: int
    dense_test_error: float | None
    best_level: int | None
    best_test_error: float | None
    effective_parameters: int | None
    effective_prunable_parameters: int | None
    lowest_error_level: int
    lowest_test_error: float | None
    total_weights: int
    prunable_total: int
    models: dict[str, ModelRecord]
    landmarks: dict[str, Any]
    skipped_replicates: list[int]
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def best_level_val(self) -> int | None:
        """The best pruned level by validation error (runs with a validation split)."""
        return self.extra.get("best_level_val")

    @property
    def status(self) -> str:
        """Where the run is on its path: the minimum reached, passed, or not yet."""
        return self.landmarks["status"]

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> RunSummary:
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in d.items() if k in names}
        known["models"] = _models(d["models"])
        return cls(**known, extra={k: v for k, v in d.items() if k not in names})

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        out["models"] = {k: v.to_json() for k, v in self.models.items()}
        return {**out, **self.extra}


@dataclasses.dataclass(frozen=True)
class StudyRecord:
    """One setting of a study (e.g. one width), pooling its runs (seeds) as replicates
    (:func:`imp_jax.core.analysis.study_record`).

    Attributes:
      values: the setting, e.g. ``{"width": 300}``.
      runs, replicates: how many runs it pools, and their replicates in all.
      total_weights: the dense network's kernel weights.
      best_level, effective_parameters: the best pruned model of the mean test-error curve, and
        its remaining weights (None while its minimum is not reached).
      lowest_error_level: the level of the lowest mean test error of the whole path.
      effective_parameters_replicates: the effective parameters over the replicates that reached
        their own best pruned model.
      status: where the pooled path is (``landmarks["status"]`` of a summary).
      models: ``dense`` and, once reached, ``best``.
      curve: the mean test-error curve (:func:`imp_jax.core.analysis.level_curve`).
    """

    values: dict[str, float]
    runs: int
    replicates: int
    total_weights: int
    best_level: int | None
    effective_parameters: int | None
    lowest_error_level: int
    effective_parameters_replicates: Stat
    status: str
    models: dict[str, ModelRecord]
    curve: dict[str, Any]

    @property
    def dense(self) -> ModelRecord:
        return self.models["dense"]

    @property
    def best(self) -> ModelRecord | None:
        """The best pruned model, or None while its minimum is not reached."""
        return self.models.get("best")
