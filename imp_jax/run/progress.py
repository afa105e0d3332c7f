"""Watching a run: progress lines with the time left, ``status.json``, training curves.

A :class:`Progress` is told when a level starts, when each epoch ends and when a level ends. It
logs a line about every ``every_seconds`` (or every ``every_epochs`` epochs), e.g. ``level 3/30
epoch 40/120 loss 0.1800 0.41 s/epoch, level ETA 33 s, run ETA 19 min``, with the time per epoch
measured after the first epoch of the level (until then, the previous level's; the process's
first epoch includes compilation); it logs each level's result line, rewrites ``status.json``
(where the run is and its state, for ``experiments.sweep --status``) and sends each
replicate's per-epoch loss, learning rate and time per epoch, and the per-level metrics, to the
metric writers (:mod:`imp_jax.run.writers`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import math
import os
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from imp_jax.core import row_metrics
from imp_jax.run.rundir import write_json
from imp_jax.run.writers import MetricWriter

log = logging.getLogger("imp_jax.run.driver")



@contextlib.contextmanager
def watching(config: Any, status: Path | None,
             writers: Sequence[MetricWriter]) -> Iterator[Progress]:
    """The :class:`Progress` of a run of ``config`` while its loop runs; closes the writers
    after it."""
    try:
        yield Progress.of_run(config, status, writers)
    finally:
        for writer in writers:
            writer.close()


def duration(seconds: float) -> str:
    """``33 s``, ``19 min``, ``2.5 h``."""
    if seconds < 100:
        return f"{seconds:.0f} s"
    if seconds < 6000:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@dataclasses.dataclass
class Progress:
    """Progress of one run's training (see the module docstring).

    Attributes:
      last_level: the last level the run will train (its stop conditions, as far as known).
      epochs: epochs per level.
      every_epochs: a line every this many epochs; 0: about every ``every_seconds``.
      every_seconds: see ``every_epochs``.
      status: where to write ``status.json``; None: nowhere (not the writing process).
      writers: one metric writer per replicate.
      num_bins: the ECE bin count of the metric names.
      clock: the time source (for tests).
    """

    last_level: int
    epochs: int
    every_epochs: int = 0
    every_seconds: float = 30.0
    status: Path | None = None
    writers: Sequence[MetricWriter] = ()
    num_bins: int = 15
    clock: Callable[[], float] = time.perf_counter
    _level: int = 0
    _epoch: float = 0
    _measured_from: tuple[int, float] | None = None  # (epoch, time) after the first epoch
    _level_rate: float | None = None  # seconds per epoch measured in this level
    _previous_rate: float | None = None  # the last level's
    _last_line: float = 0.0
    _overheads: list[float] = dataclasses.field(default_factory=list)
    _level_start: float = 0.0

    @classmethod
    def of_run(cls, config: Any, status: Path | None,
               writers: Sequence[MetricWriter]) -> Progress:
        """The progress of a run of ``config`` (its levels, epochs, ``log`` and ECE bins)."""
        return cls(config.imp.levels, config.train.epochs, config.log.every_epochs,
                   config.log.every_seconds, status=status, writers=writers,
                   num_bins=config.eval.num_bins)

    def start_level(self, level: int, epoch: int, last_level: int | None = None) -> None:
        """Level ``level`` starts (or resumes) training at ``epoch``; ``last_level``: the run's
        last level, as now known."""
        if last_level is not None:
            self.last_level = last_level
        # Every level runs the same compiled steps: the last level's rate holds until this
        # level's own is measured.
        self._previous_rate = self._level_rate or self._previous_rate
        self._level, self._epoch, self._measured_from, self._level_rate = level, epoch, None, None
        self._level_start = self._last_line = self.clock()
        self.write_status(level, epoch)

    def seconds_per_epoch(self, epoch: int) -> float | None:
        """The measured time per epoch at ``epoch``; before two epochs of the level have ended,
        the previous level's (None in the process's first level)."""
        return self._measured_rate(epoch) or self._previous_rate

    def _measured_rate(self, epoch: int) -> float | None:
        if self._measured_from is None or epoch <= self._measured_from[0]:
            return None
        first, since = self._measured_from
        self._level_rate = (self.clock() - since) / (epoch - first)
        return self._level_rate

    def eta(self, level: int, epoch: int) -> tuple[float, float] | None:
        """Seconds left in the level and in the run, or None before a rate is measured."""
        rate = self.seconds_per_epoch(epoch)
        if rate is None:
            return None
        overhead = float(np.mean(self._overheads)) if self._overheads else 0.0
        left = (self.epochs - epoch) * rate
        later = max(self.last_level - level, 0) * (self.epochs * rate + overhead)
        return left, left + overhead + later

    def epoch_end(self, level: int, epoch: int, losses: np.ndarray, lr: float) -> None:
        """Epoch ``epoch`` (1-based) of ``level`` ended with each replicate's mean ``losses``."""
        now = self.clock()
        measured, rate = self._measured_rate(epoch), self.seconds_per_epoch(epoch)
        self._epoch = epoch
        if self._measured_from is None:
            self._measured_from = (epoch, now)  # the first epoch holds any compilation
        for r, writer in enumerate(self.writers):
            values = {f"level_{level:02d}/train_loss": float(losses[r]),
                      f"level_{level:02d}/learning_rate": lr}
            if measured is not None:  # this level's own, for the curve
                values[f"level_{level:02d}/seconds_per_epoch"] = measured
            writer.scalars(epoch, values)
        due = (epoch % self.every_epochs == 0 if self.every_epochs else
               now - self._last_line >= self.every_seconds)
        if due and epoch < self.epochs:
            self._last_line = now
            times = self.eta(level, epoch)
            timing = ("first epoch, with compilation" if rate is None or times is None else
                      f"{rate:.3f} s/epoch, level ETA {duration(times[0])}, run ETA "
                      f"{duration(times[1])}")
            log.info("level %d/%d epoch %d/%d loss %.4f %s", level, self.last_level, epoch,
                     self.epochs, float(np.nanmean(losses)), timing)
            self.write_status(level, epoch, float(np.nanmean(losses)), times)

    def level_line(self, level: int, rows: Sequence[Mapping[str, Any]], seconds: float) -> None:
        """Logs the result of ``level`` (the mean over its replicates' rows): weights and the
        metrics of the progress line (:mod:`imp_jax.core.row_metrics`) that the rows have."""
        first = rows[0]
        values = " | ".join(
            f"{row_metrics.metric(k, self.num_bins).line} {np.mean([r[k] for r in rows]):.4f}"
            for k in row_metrics.names(self.num_bins, line=True) if k in first)
        log.info("level %2d/%d | weights %d/%d (%.2f%%) | %s | %.1f s", level, self.last_level,
                 first["remaining_weights"], first["total_weights"],
                 100 * (1 - first["sparsity"]), values, seconds)

    def level_end(self, level: int, rows: Sequence[Mapping[str, Any]],
                  train_seconds: float) -> None:
        """``level`` ended with these metrics rows (one per replicate)."""
        self._overheads.append(max(self.clock() - self._level_start - train_seconds, 0.0))
        for writer, row in zip(self.writers, rows, strict=False):
            writer.scalars(level, {f"levels/{name}": float(row[name]) for name in
                                   row_metrics.names(self.num_bins, tensorboard=True)
                                   if name in row and math.isfinite(float(row[name]))})
        self.write_status(level, self.epochs, finished_level=True)

    def level_done(self, level: int, rows: Sequence[Mapping[str, Any]],
                   seconds: Mapping[str, float], resumed: bool = False) -> None:
        """``level`` has its rows: its line, then (unless its rows are only ``resumed``, written
        for a level a previous process finished) its curves and status. ``seconds``: its time
        by step."""
        self.level_line(level, rows, sum(seconds.values()) + rows[0]["time_eval_s"])
        if not resumed:
            self.level_end(level, rows, seconds.get("train", 0.0))

    def stopped(self, state: str, level: int | None = None, epoch: float | None = None) -> None:
        """The run stopped (``state``: "interrupted" after SIGTERM/SIGINT, at ``level`` and
        ``epoch``, where it resumes; or "failed", where it was): ``status.json`` says so, no
        longer "running"."""
        self.write_status(self._level if level is None else level,
                          self._epoch if epoch is None else epoch, state=state)

    def finished(self) -> None:
        """The run is finished: ``status.json`` says so, at its last level's end."""
        self.write_status(self._level, self.epochs, finished_level=True, state="finished")

    def write_status(self, level: int, epoch: int, loss: float | None = None,
                     times: tuple[float, float] | None = None, *,
                     finished_level: bool = False, state: str = "running") -> None:
        """Rewrites ``status.json``: ``state`` ("running", "interrupted", "failed" or
        "finished"), level and epoch, the loss and time left."""
        if self.status is None:
            return
        write_json(self.status, {
            "state": state, "level": level, "last_level": self.last_level, "epoch": epoch,
            "epochs": self.epochs, "level_finished": finished_level, "loss": loss,
            "level_eta_s": None if times is None else times[0],
            "run_eta_s": None if times is None else times[1],
            "pid": os.getpid(), "host": socket.gethostname(),
            "updated": datetime.datetime.now().astimezone().isoformat(timespec="seconds")})
