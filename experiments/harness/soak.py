"""The soak test of resuming: kill a run at random moments, resume it, compare with a clean run.

    python -m experiments.soak --config=configs/mixture_linear.py:smoke --kills=10 \
        [--config.a.b=value ...] [--seed=0] [--workdir=DIR] [--nosignals]

The config (``--config=...`` and ``--config.a.b=value`` overrides, passed on verbatim) is run once
uninterrupted with ``python -m experiments.run`` into ``DIR/reference``. Then it is run again into
``DIR/resumed-1``; every start of that run is interrupted and started again with the same command,
until the run is allowed to finish. The first start is stopped with SIGTERM and the second with
SIGINT, each as soon as the start has written a checkpoint: the process must print
``interrupted:`` and exit with 143 / 130. The others are killed with SIGKILL, at moments a seeded
RNG draws, every aim in turn (in a random order):

* *start-up*: a delay drawn uniformly from the reference's time until its first checkpoint
  (imports, data, compilation);
* *mid-level*: a delay after the start's first checkpoint, drawn uniformly from the reference's
  mean time between two checkpoints (an epoch is one compiled call: this lands mid-epoch);
* *checkpoint write*: the moment the start's first or second Orbax checkpoint write begins (its
  temporary directory appears; the run directory is polled every millisecond);
* *between levels*: the moment the start's first or second level's rows land in metrics.jsonl;
* *anytime*: a delay drawn uniformly from the reference's time until its IMP work finished.

Each kill is then classified by what the run directory shows once the process is dead:
*checkpoint write* (a temporary checkpoint directory of that start was left behind), *between
levels*, *start-up* (that start had saved nothing yet) or *mid-level* (it had saved something).
Only SIGKILLs that interrupt unfinished work count: a kill that lands after ``summary.json`` says
the run is finished (while the figures are drawn) is reported as *late* and not counted, and a
planned kill that never happened because the process ended first is reported as *missed*. When
the run finishes before enough kills landed, a new run directory ``resumed-2``, ... is started,
so that every counted kill interrupted real work.

Every resumed run is compared with the reference: identical metrics rows ignoring the timing
fields (``time_*_s``), no missing or duplicate (replicate, level) rows, the same summary, and
bitwise-equal masks and params of every finished level (restored with
:meth:`imp_jax.run.driver.Run.restore_level`). The last line reads e.g.
``soak: kills survived 10/10, rows lost 0, duplicates 0, masks equal: yes``; the exit status is
1 if anything differs.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from imp_jax.run import driver

ROOT = Path(__file__).resolve().parents[1]  # the runs are started from the repository
_POLL_S = 0.001  # how often a start's run directory is looked at
_TMP_MARK = "orbax-checkpoint-tmp"  # Orbax writes a checkpoint into <step>.orbax-checkpoint-tmp


class SoakError(RuntimeError):
    """A run started by the soak test failed on its own."""


# ---------------------------------------------------------------------------------------------
# Starting runs and watching their run directories.


def command(config_args: Sequence[str], workdir: Path) -> list[str]:
    """The command line of one start: ``python -m experiments.run`` with the config's flags."""
    return [sys.executable, "-m", "experiments.run", *config_args, f"--workdir={workdir}"]


def environment() -> dict[str, str]:
    """The parent's environment, with the repository importable."""
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _mtime_ns(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return 0


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """What a run directory holds at one moment; cheap enough to take every millisecond."""

    checkpoints: frozenset[str]  # committed checkpoints, e.g. "levels/3"
    writing: frozenset[str]  # checkpoints being written (Orbax's temporary directories)
    rows_bytes: int  # size of metrics.jsonl
    summary_ns: int  # modification time of summary.json (0: none yet)

    @staticmethod
    def take(workdir: Path) -> Snapshot:
        committed, writing = set(), set()
        for series in ("rewind", "levels", "progress"):
            try:
                with os.scandir(workdir / "checkpoints" / series) as entries:
                    for e in entries:
                        (writing if _TMP_MARK in e.name else committed).add(f"{series}/{e.name}")
            except FileNotFoundError:
                pass
        try:
            size = (workdir / "metrics.jsonl").stat().st_size
        except FileNotFoundError:
            size = 0
        return Snapshot(frozenset(committed), frozenset(writing), size,
                        _mtime_ns(workdir / "summary.json"))


def finished(workdir: Path) -> bool:
    """Whether the run's IMP work is done (``summary.json`` says so; figures may be pending)."""
    try:
        return bool(json.loads((workdir / "summary.json").read_text()).get("finished"))
    except (FileNotFoundError, ValueError):
        return False


@dataclasses.dataclass
class Progress:
    """What one start has done so far, as seen from outside."""

    elapsed_s: float = 0.0
    first_commit_s: float = math.inf  # when it had committed its first checkpoint
    finished_s: float = math.inf  # when summary.json said the run is finished
    commits: set[str] = dataclasses.field(default_factory=set)  # checkpoints it committed
    writes: set[str] = dataclasses.field(default_factory=set)  # checkpoint writes it began
    appends: int = 0  # times metrics.jsonl grew

    def interval_s(self) -> float:
        """The mean time between two of its checkpoints, once started."""
        return (self.finished_s - self.first_commit_s) / max(len(self.commits) - 1, 1)


@dataclasses.dataclass(frozen=True)
class Plan:
    """When to interrupt one start, and with which signal.

    ``aim`` is "start-up" or "anytime" (``delay_s`` after the start), "mid-level" (``delay_s``
    after the start's first checkpoint), "checkpoint write" (when the ``nth`` checkpoint write of
    the start begins), "between levels" (when rows are appended for the ``nth`` time), "signal"
    (once the start has committed a checkpoint), or "none".
    """

    aim: str
    signum: int = signal.SIGKILL
    delay_s: float = 0.0
    nth: int = 1

    def due(self, p: Progress) -> bool:
        """Whether to interrupt now."""
        return {
            "start-up": p.elapsed_s >= self.delay_s,
            "anytime": p.elapsed_s >= self.delay_s,
            "mid-level": p.elapsed_s >= p.first_commit_s + self.delay_s,
            "checkpoint write": len(p.writes) >= self.nth,
            "between levels": p.appends >= self.nth,
            "signal": bool(p.commits),
        }.get(self.aim, False)


@dataclasses.dataclass(frozen=True)
class Start:
    """How one start ended: its exit status, and what it left in the run directory."""

    returncode: int
    signalled: bool  # the planned signal was sent while the process was running
    before: Snapshot
    after: Snapshot
    output: str
    progress: Progress


def start(config_args: Sequence[str], workdir: Path, plan: Plan, log: Path) -> Start:
    """Starts the run in ``workdir`` and interrupts it as ``plan`` says (or lets it finish);
    its output is appended to ``log``."""
    before = last = Snapshot.take(workdir)
    p = Progress()
    signalled = False
    with open(log, "a+") as out:
        out.write(f"\n=== start, plan {plan}\n")
        out.flush()
        offset = out.tell()
        t0 = time.monotonic()
        proc = subprocess.Popen(command(config_args, workdir), env=environment(), stdout=out,
                                stderr=subprocess.STDOUT)
        try:
            while proc.poll() is None:
                now, p.elapsed_s = Snapshot.take(workdir), time.monotonic() - t0
                p.writes |= now.writing - before.writing
                p.commits |= now.checkpoints - before.checkpoints
                if p.commits:
                    p.first_commit_s = min(p.first_commit_s, p.elapsed_s)
                if now.rows_bytes > last.rows_bytes:
                    p.appends += 1
                if now.summary_ns != last.summary_ns and finished(workdir):
                    p.finished_s = min(p.finished_s, p.elapsed_s)
                last = now
                if plan.due(p):
                    # poll() again: a process that has just exited must not count as signalled.
                    if proc.poll() is None:
                        proc.send_signal(plan.signum)
                        signalled = True
                    break
                time.sleep(_POLL_S)
            returncode = proc.wait()
            p.elapsed_s = time.monotonic() - t0
        finally:
            if proc.poll() is None:  # the soak itself was interrupted
                proc.kill()
                proc.wait()
        out.seek(offset)
        output = out.read()
    return Start(returncode, signalled, before, Snapshot.take(workdir), output, p)


def run_once(config_args: Sequence[str], workdir: Path) -> Start:
    """Runs the config uninterrupted into ``workdir`` (output in ``<workdir>.log``).

    Raises:
      SoakError: the run failed.
    """
    log = workdir.with_name(workdir.name + ".log")
    result = start(config_args, workdir, Plan("none"), log)
    if result.returncode != 0:
        raise SoakError(f"the uninterrupted run in {workdir} exited with {result.returncode}; "
                        f"see {log}")
    return result


# ---------------------------------------------------------------------------------------------
# Comparing two run directories.


@dataclasses.dataclass(frozen=True)
class Comparison:
    """How a resumed run differs from the reference."""

    rows_lost: int  # (replicate, level) rows of the reference missing
    duplicates: int  # (replicate, level) rows written more than once
    rows_equal: bool  # every row equal to the reference's, timing fields aside
    summary_equal: bool
    masks_equal: bool  # bitwise, at every finished level
    params_equal: bool

    @property
    def ok(self) -> bool:
        return (not self.rows_lost and not self.duplicates and self.rows_equal
                and self.summary_equal and self.masks_equal and self.params_equal)


def _rows(workdir: Path) -> list[dict[str, Any]]:
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items()
             if not (k.startswith("time_") and k.endswith("_s"))} for line in lines]


def _bitwise_equal(a: Any, b: Any) -> bool:
    """The same tree structure, and every leaf the same shape, dtype and bytes (NaNs too)."""
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    return ta == tb and all(
        x.shape == y.shape and x.dtype == y.dtype and x.tobytes() == y.tobytes()
        for x, y in zip(map(np.asarray, la), map(np.asarray, lb), strict=True))


def compare(reference: Path, other: Path) -> Comparison:
    """Compares the rows, summary and per-level masks and params of two finished runs."""
    ref_rows, rows = _rows(reference), _rows(other)

    def key(row: dict[str, Any]) -> tuple[int, int]:
        return row["replicate"], row["level"]

    counts = collections.Counter(map(key, rows))
    by_key = {key(r): r for r in rows}
    summaries = [json.loads((d / "summary.json").read_text()) for d in (reference, other)]
    runs = [driver.open_run(str(d)) for d in (reference, other)]
    try:
        levels = [run.finished_levels() for run in runs]
        masks_equal = params_equal = levels[0] == levels[1]
        for level in levels[0] if masks_equal else []:
            a, b = (run.restore_level(level) for run in runs)
            masks_equal &= _bitwise_equal(a.masks, b.masks)
            params_equal &= _bitwise_equal(a.params, b.params)
    finally:
        for run in runs:
            run.ckpt.close()
    return Comparison(
        rows_lost=sum(key(r) not in counts for r in ref_rows),
        duplicates=sum(n - 1 for n in counts.values()),
        rows_equal=len(by_key) == len(ref_rows) and all(by_key.get(key(r)) == r
                                                         for r in ref_rows),
        summary_equal=summaries[0] == summaries[1], masks_equal=masks_equal,
        params_equal=params_equal)


# ---------------------------------------------------------------------------------------------
# The soak test.


@dataclasses.dataclass
class Report:
    """What the soak test did and found."""

    wanted: int  # SIGKILLs asked for
    reference: Start | None = None
    starts: int = 0
    kills: int = 0  # SIGKILLs that interrupted unfinished work: the ones that count
    survived: int = 0  # of those, the ones in resumed runs equal to the reference
    late: int = 0  # SIGKILLs after the run had finished (figures being drawn): not counted
    missed: int = 0  # planned interruptions that never happened: the process ended first
    moments: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    signals: list[str] = dataclasses.field(default_factory=list)
    comparisons: list[Comparison] = dataclasses.field(default_factory=list)
    problems: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (not self.problems and bool(self.comparisons)
                and all(c.ok for c in self.comparisons) and self.survived == self.wanted)

    def lines(self) -> list[str]:
        """The report, one ``soak:`` line per topic; the last is the verdict."""
        def yes(ok: bool) -> str:
            return "yes" if ok else "NO"

        c, ref = self.comparisons, self.reference
        moments = ", ".join(f"{k} {n}" for k, n in sorted(self.moments.items()))
        return [
            *([f"soak: reference run {ref.progress.elapsed_s:.1f} s (first checkpoint after "
               f"{ref.progress.first_commit_s:.1f} s, finished after "
               f"{ref.progress.finished_s:.1f} s); {len(c)} resumed run(s), {self.starts} "
               f"starts"] if ref else []),
            f"soak: kills by moment: {moments or 'none'}; not counted: {self.late} late (the run "
            f"had finished, figures being drawn), {self.missed} missed (the process ended first)",
            *(f"soak: {s}" for s in self.signals),
            *(f"soak: problem: {p}" for p in self.problems),
            f"soak: kills survived {self.survived}/{self.wanted}, rows lost "
            f"{sum(x.rows_lost for x in c)}, duplicates {sum(x.duplicates for x in c)}, rows "
            f"equal: {yes(bool(c) and all(x.rows_equal and x.summary_equal for x in c))}, "
            f"masks equal: {yes(bool(c) and all(x.masks_equal for x in c))}, params equal: "
            f"{yes(bool(c) and all(x.params_equal for x in c))}",
        ]


def _moment(plan: Plan, result: Start) -> str:
    """Where a SIGKILL landed, judged from what the run directory shows afterwards."""
    if result.after.writing - result.before.writing:
        return "checkpoint write"
    if plan.aim == "between levels":
        return "between levels"
    if (result.after.checkpoints - result.before.checkpoints
            or result.after.rows_bytes != result.before.rows_bytes):
        return "mid-level"
    return "start-up"


class _Planner:
    """Draws the SIGKILL plans: every aim equally often, in a seeded random order."""

    AIMS = ("start-up", "mid-level", "checkpoint write", "between levels", "anytime")

    def __init__(self, seed: int, reference: Progress) -> None:
        self.rng = random.Random(seed)
        finished_s = min(reference.finished_s, reference.elapsed_s)
        # Delays are drawn from the reference's start-up (until its first checkpoint), from its
        # mean time between two checkpoints, or from its whole IMP work.
        self.delay_range = {"start-up": min(reference.first_commit_s, finished_s),
                            "mid-level": min(reference.interval_s(), finished_s),
                            "anytime": finished_s}
        self.pending: list[Plan] = []

    def next(self) -> Plan:
        if not self.pending:
            for aim in self.rng.sample(self.AIMS, len(self.AIMS)):
                delay_s = self.rng.uniform(0, self.delay_range.get(aim, 0.0))
                self.pending.append(Plan(aim, delay_s=delay_s, nth=self.rng.randint(1, 2)))
        return self.pending.pop()


def _resume_until_finished(config_args: Sequence[str], workdir: Path, report: Report,
                           planner: _Planner, stops: list[int]) -> int:
    """Starts the run in ``workdir`` again and again, interrupting each start (first with the
    ``stops`` signals, then with SIGKILLs while ``report`` wants more), until it finishes.
    Returns the number of SIGKILLs counted; problems go to ``report``."""
    log = workdir.with_name(workdir.name + ".log")
    counted = 0
    while report.starts < 6 * report.wanted + 10:  # against a loop that never lands a kill
        if stops:
            plan = Plan("signal", signum=stops[0])
        elif report.kills < report.wanted and not finished(workdir):
            plan = planner.next()
        else:
            plan = Plan("none")
        result = start(config_args, workdir, plan, log)
        report.starts += 1
        if plan.aim == "signal":
            name = signal.Signals(plan.signum).name
            printed = any(line.startswith("interrupted:") for line in result.output.splitlines())
            if not (result.signalled and result.returncode == 128 + plan.signum and printed):
                report.problems.append(f"{name}: sent {result.signalled}, exit "
                                       f"{result.returncode}, 'interrupted:' printed {printed}; "
                                       f"see {log}")
                return counted
            report.signals.append(f"{name}: exit {result.returncode}, printed 'interrupted:'")
            stops.pop(0)
        elif result.returncode == -signal.SIGKILL:
            if finished(workdir):
                report.late += 1
            else:
                report.kills += 1
                counted += 1
                report.moments[_moment(plan, result)] += 1
        else:
            if plan.aim != "none":
                report.missed += 1
            if result.returncode != 0:
                report.problems.append(f"a start in {workdir} exited with {result.returncode}; "
                                       f"see {log}")
            return counted
    report.problems.append(f"gave up on {workdir} after {report.starts} starts; see {log}")
    return counted


def soak(config_args: Sequence[str], base: Path, kills: int, seed: int = 0,
         signals: bool = True) -> Report:
    """Runs the soak test of the config in the folder ``base`` (see the module docstring)."""
    report = Report(wanted=kills)
    reference = base / "reference"
    report.reference = run_once(config_args, reference)
    planner = _Planner(seed, report.reference.progress)
    stops = [signal.SIGTERM, signal.SIGINT] if signals else []
    while (report.kills < kills or stops) and not report.problems:
        workdir = base / f"resumed-{len(report.comparisons) + 1}"
        counted = _resume_until_finished(config_args, workdir, report, planner, stops)
        if report.problems:
            break
        comparison = compare(reference, workdir)
        report.comparisons.append(comparison)
        if comparison.ok:
            report.survived += counted
        else:
            report.problems.append(f"{workdir} differs from {reference}: {comparison}")
    return report
