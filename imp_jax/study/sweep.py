"""Studies of many runs: a config with a ``sweep`` section, expanded into one config per point.

A sweep config is an ordinary run config (see :mod:`imp_jax.run.config`) plus a ``sweep`` section
(:func:`with_sweep`):

* ``sweep.width``: widths, set as the first hidden width ``model.hidden[0]`` of an FCN (so a
  784-P-100-10 network sweeps P), or as ``model.width`` of a ResNet or VGG (W);
* ``sweep.nu``: mixture separations, set as ``data.mixture_nu``;
* ``sweep.seed``: seeds, set as ``seed`` (each run still has ``replicates`` seeds in one program);
* ``sweep.overrides``: ``(condition, field, value)`` triples applied in order to the points whose
  coordinates meet the condition, e.g. ``("width>=1000", "imp.rewind", "1ep")``. A condition is
  ``<axis><op><number>`` with an axis above and op one of ``>=``, ``<=``, ``>``, ``<``, ``==``;
  it is tested against the point's width, nu and seed, swept or not (a ResNet's or VGG's
  ``model.width`` is 0 when it has the standard width).

An empty axis is not swept; the points are the cartesian product of the swept axes, in the order
width, nu, seed. :func:`points` validates the sweep section and every point's config (which has
no ``sweep`` section: :func:`imp_jax.run.config.validate` refuses one, so a sweep config cannot be
run as a single run by mistake).
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import itertools
import logging
import operator
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ml_collections

from imp_jax.core import models
from imp_jax.data import tasks
from imp_jax.run import config as config_lib
from imp_jax.run import driver
from imp_jax.run.config import ConfigError
from imp_jax.run.rundir import (
    RunDir,
    RunDirBusyError,
    RunDirError,
    earlier_names,
    read_json,
    write_json,
)

log = logging.getLogger(__name__)

AXES = ("width", "nu", "seed")
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq}
_CONDITION = re.compile(r"^\s*(width|nu|seed)\s*(>=|<=|==|>|<)\s*([-+]?(?:\d+\.?\d*|\.\d+)"
                        r"(?:[eE][-+]?\d+)?)\s*$")


@dataclasses.dataclass(frozen=True)
class Point:
    """One run of a sweep: its name (``width=300_nu=0.5``), swept values and full config."""

    name: str
    values: dict[str, int | float]
    config: ml_collections.ConfigDict


def with_sweep(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Adds an empty ``sweep`` section to ``config`` (in place) and returns it."""
    config.sweep = ml_collections.ConfigDict()
    config.sweep.width = ()
    config.sweep.nu = ()
    config.sweep.seed = ()
    config.sweep.overrides = ()
    return config


def base_sweep_config() -> ml_collections.ConfigDict:
    """:func:`imp_jax.run.config.base_config` with an empty ``sweep`` section."""
    return with_sweep(config_lib.base_config())


_AXIS_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "width": (lambda v: config_lib.is_int(v) and v >= 1, "positive integers"),
    "nu": (lambda v: config_lib.is_number(v) and v > 0, "positive numbers"),
    "seed": (lambda v: config_lib.is_int(v) and v >= 0, "integers >= 0"),
}


def _check_axes(sweep: ml_collections.ConfigDict, config: ml_collections.ConfigDict) -> None:
    for axis, (ok, what) in _AXIS_RULES.items():
        values = sweep[axis]
        if not isinstance(values, (tuple, list)) or not all(ok(v) for v in values):
            raise ConfigError(f"config.sweep.{axis}: must be a tuple of {what}, got {values!r}")
        if len(set(values)) != len(values):
            raise ConfigError(f"config.sweep.{axis}: has repeated values, got {values!r}")
    if sweep.width and config.model.name not in models.WIDE_MODELS:
        raise ConfigError(f"config.sweep.width: model.name {config.model.name!r} has no width; "
                          f"width sweeps are for {models.WIDE_MODELS}")
    if sweep.nu and not (config.data.name in tasks.TASKS
                         and tasks.get(config.data.name).is_mixture):
        raise ConfigError(f"config.sweep.nu: only mixture datasets have a nu, and data.name is "
                          f"{config.data.name!r}")
    if not any(sweep[axis] for axis in AXES):
        raise ConfigError(f"config.sweep: no axis is swept; give at least one of "
                          f"{', '.join('sweep.' + a for a in AXES)}")


def _parse_condition(text: Any, where: str) -> Callable[[dict[str, float]], bool]:
    match = _CONDITION.match(text) if isinstance(text, str) else None
    if match is None:
        raise ConfigError(f"{where}: the condition must look like 'width>=1000' (<axis><op>"
                          f"<number>, axis one of {AXES}, op one of {tuple(_OPS)}), got {text!r}")
    axis, op, number = match.groups()
    return lambda coords: _OPS[op](coords[axis], float(number))


def _check_overrides(overrides: Any) -> list[tuple[Callable[[dict[str, float]], bool], str, Any]]:
    """The overrides as (condition test, field, value); ConfigError for a malformed one."""
    if not isinstance(overrides, (tuple, list)):
        raise ConfigError(f"config.sweep.overrides: must be a tuple of (condition, field, value) "
                          f"triples, got {overrides!r}")
    parsed = []
    for i, entry in enumerate(overrides):
        where = f"config.sweep.overrides[{i}]"
        if not isinstance(entry, (tuple, list)) or len(entry) != 3:
            raise ConfigError(f"{where}: must be a (condition, field, value) triple, got "
                              f"{entry!r}")
        condition, field, value = entry
        if field not in config_lib.FIELDS:
            raise ConfigError(f"{where}: {field!r} is not a config field (e.g. 'imp.rewind')")
        parsed.append((_parse_condition(condition, where), field, value))
    return parsed


def _format(value: int | float) -> str:
    return str(value) if config_lib.is_int(value) else repr(float(value))


def points(sweep_config: ml_collections.ConfigDict) -> list[Point]:
    """Every point of the sweep, each with its validated config (no ``sweep`` section).

    Raises:
      ConfigError: a bad sweep value (``config.sweep.<field>: ...``), or a point's config is
        invalid (the field, then the point's name).
    """
    if "sweep" not in sweep_config:
        raise ConfigError("config.sweep: missing; build sweep configs with "
                          "imp_jax.study.sweep.with_sweep(config) or base_sweep_config()")
    sweep = sweep_config.sweep
    unknown = sorted(set(sweep.keys()) - {*AXES, "overrides"})
    if unknown:
        raise ConfigError(f"config.sweep.{unknown[0]}: unknown field")
    _check_axes(sweep, sweep_config)
    overrides = _check_overrides(sweep.overrides)
    base = copy.deepcopy(sweep_config)
    with base.unlocked():
        del base["sweep"]
    swept = [a for a in AXES if sweep[a]]
    result = []
    for combo in itertools.product(*(sweep[a] for a in swept)):
        values = dict(zip(swept, combo, strict=True))
        if "nu" in values:
            values["nu"] = float(values["nu"])
        name = "_".join(f"{a}={_format(v)}" for a, v in values.items())
        config = copy.deepcopy(base)
        fcn = config.model.name == "fcn"
        if "width" in values and fcn:
            config.model.hidden = (values["width"], *tuple(config.model.hidden)[1:])
        elif "width" in values:
            config.model.width = values["width"]
        if "nu" in values:
            config.data.mixture_nu = values["nu"]
        if "seed" in values:
            config.seed = values["seed"]
        width = (config.model.hidden[0] if config.model.hidden else 0) if fcn else (
            config.model.width)  # 0: the architecture's standard width
        coords = {"width": width, "nu": config.data.mixture_nu, "seed": config.seed}
        for i, (applies, field, value) in enumerate(overrides):
            if applies(coords):
                try:
                    config_lib.set_field(config, field, value)
                except ConfigError as e:
                    raise ConfigError(f"config.sweep.overrides[{i}] at point {name}: {e}") from e
        try:
            config_lib.validate(config)
        except ConfigError as e:
            raise ConfigError(f"{e} (sweep point {name})") from e
        result.append(Point(name, values, config))
    return result


def _without_axes(sweep_config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    config = copy.deepcopy(sweep_config)
    with config.unlocked():
        for axis in AXES:
            config.sweep[axis] = ()
    return config


def fingerprint(sweep_config: ml_collections.ConfigDict) -> str:
    """A short hash of the sweep's results-determining fields that differ from their defaults,
    its axes' values excepted (see :func:`imp_jax.run.config.fingerprint`).

    Widening an axis therefore keeps the sweep directory (see ``experiments/sweep.py``) and
    reuses the points already run; changing anything else (overrides included) gives another,
    and a config field added with a default changes none.
    """
    return config_lib.fingerprint(_without_axes(sweep_config),
                                  {f"sweep.{k}": [] for k in (*AXES, "overrides")})


def same_sweep(stored: Any, sweep_config: ml_collections.ConfigDict) -> bool:
    """Whether ``stored`` (the content of a ``sweep.json``) is of the sweep ``sweep_config``
    but for its axes' values: by its fingerprint, as this version or an earlier one computes
    it, or by the sweep config it records (laid over today's defaults)."""
    if not isinstance(stored, dict):
        return False
    wanted = fingerprint(sweep_config)
    if stored.get("fingerprint") in (wanted, config_lib.legacy_fingerprint(
            _without_axes(sweep_config))):
        return True
    try:
        old = config_lib.from_json_dict(stored["config"], base_sweep_config())
        return fingerprint(old) == wanted
    except (KeyError, TypeError, ValueError, AttributeError):
        return False


# ---------------------------------------------------------------------------------------------
# The sweep directory: one run directory per point, and sweep.json listing them.

SWEEP_FILE = "sweep.json"


def default_sweep_dir(sweep_config: ml_collections.ConfigDict, root: str = "runs") -> str:
    """``<root>/<name>-<fingerprint of the sweep>`` (see :func:`fingerprint`); where that does
    not exist but an earlier version named the same sweep's directory otherwise (see
    :func:`same_sweep`), that one."""
    path = Path(root) / f"{sweep_config.name}-{fingerprint(sweep_config)}"
    if not path.exists():
        legacy = config_lib.legacy_fingerprint(_without_axes(sweep_config))
        for old in earlier_names(Path(root), sweep_config.name, legacy):
            if same_sweep(read_json(old / SWEEP_FILE), sweep_config):
                log.info("the sweep is in %s (named by an earlier version)", old)
                return str(old)
    return str(path)


def check_sweep_dir(sweep_dir: Path, sweep_config: ml_collections.ConfigDict,
                    sweep_points: list[Point]) -> None:
    """Checks that ``sweep_dir`` can hold this sweep; writes nothing.

    Raises:
      RunDirError: the directory holds another sweep or is not a sweep directory, or a point's
        run directory holds a run of another config (compared as runs are, see
        :meth:`RunDir.check`).
    """
    sweep_file = sweep_dir / SWEEP_FILE
    if sweep_file.exists():
        if not same_sweep(read_json(sweep_file), sweep_config):
            raise RunDirError(f"{sweep_dir} holds another sweep (its {SWEEP_FILE} has "
                              f"another fingerprint); choose another --sweep_dir or omit it")
    elif sweep_dir.exists() and (not sweep_dir.is_dir() or any(
            not p.name.startswith(".") for p in sweep_dir.iterdir())):  # another's temporaries
        raise RunDirError(f"{sweep_dir} exists and has no {SWEEP_FILE}: not a sweep directory")
    for point in sweep_points:
        try:
            RunDir(sweep_dir / point.name).check(point.config)
        except RunDirError as e:
            raise RunDirError(f"point {point.name}: {e}") from e


def claim(sweep_dir: Path, sweep_config: ml_collections.ConfigDict,
          sweep_points: list[Point]) -> None:
    """:func:`check_sweep_dir`, then writes ``sweep.json`` (the points and their directories)."""
    check_sweep_dir(sweep_dir, sweep_config, sweep_points)
    write_json(sweep_dir / SWEEP_FILE, {
        "name": sweep_config.name, "fingerprint": fingerprint(sweep_config),
        "config": config_lib.to_json_dict(sweep_config),
        "points": [{"name": p.name, "values": p.values, "dir": p.name} for p in sweep_points]})


def finished_summary(run_dir: Path, config: ml_collections.ConfigDict) -> dict[str, Any] | None:
    """The summary of a finished run in ``run_dir`` stopped by the same conditions as
    ``config`` (``imp.levels``, ``imp.min_weights``), else None (the run must continue)."""
    summary = read_json(RunDir(run_dir).summary)
    stored = read_json(RunDir(run_dir).config)
    if not (isinstance(summary, dict) and summary.get("finished") and isinstance(stored, dict)):
        return None
    same = all(stored.get("imp", {}).get(k) == config.imp[k] for k in ("levels", "min_weights"))
    return summary if same else None


def _run_point(root: Path, point: Point, number: str, *, quiet: bool = False
               ) -> dict[str, Any] | None:
    """The summary of ``point`` once finished: found, or run (resumed) here; None when another
    worker trains it (holds its run directory's lock), which is logged unless ``quiet``."""
    start = time.perf_counter()
    run_dir = root / point.name
    summary = finished_summary(run_dir, point.config)
    done_before = summary is not None
    if summary is None:
        holder = RunDir(run_dir).holder()
        try:
            summary = None if holder else driver.run(point.config, str(run_dir))
        except RunDirBusyError:  # another worker took the lock in the meantime
            holder = RunDir(run_dir).holder() or "another worker"
        if summary is None:
            if not quiet:
                log.info("point %s %s: being trained by %s; left to it", number, point.name,
                         holder)
            return None
    best = ("no best pruned model yet" if summary["best_level"] is None else
            f"{summary['effective_parameters']} weights (level {summary['best_level']}), "
            f"test error {summary['best_test_error']:.4f}")
    log.info("point %s %s: %s | %d weights, test error %.4f -> %s | %.1f s", number,
             point.name, "finished before" if done_before else "ran", summary["total_weights"],
             summary["dense_test_error"], best, time.perf_counter() - start)
    return summary


def run_sweep(sweep_config: ml_collections.ConfigDict, sweep_dir: str | Path
              ) -> list[dict[str, Any]]:
    """Runs or resumes, in order, every point of the sweep in ``sweep_dir`` that no other worker
    is training; returns the summaries of the finished points, in order.

    Any number of workers (processes on one host, or on hosts sharing the file system) may run
    the same sweep directory at once. A point is claimed by its run directory's lock
    (:meth:`RunDir.locked`): a worker skips the points another one holds and passes over them
    again while it still finds work, so it exits when every point is finished or held by
    another worker. The lock of a worker that dies is released with it (on NFS, when its lease
    expires), and the next pass of any worker, or the next worker started, resumes its point
    from the last checkpoint, to the same rows as an uninterrupted run.

    Raises:
      imp_jax.run.config.ConfigError: a bad sweep or point config, before anything is written.
      RunDirError: see :func:`check_sweep_dir`, also before any point runs.
      driver.RunInterruptedError, driver.TrainingDivergedError: from the point being run.
    """
    sweep_points = points(sweep_config)
    root = Path(sweep_dir)
    claim(root, sweep_config, sweep_points)
    summaries: dict[str, dict[str, Any]] = {}
    left = list(enumerate(sweep_points, 1))
    while left:
        held = []
        for i, point in left:
            summary = _run_point(root, point, f"{i}/{len(sweep_points)}",
                                 quiet=len(left) < len(sweep_points))  # said on the first pass
            if summary is None:
                held.append((i, point))
            else:
                summaries[point.name] = summary
        if len(held) == len(left):  # no progress: every point left is another worker's
            break
        left = held
    return [summaries[p.name] for p in sweep_points if p.name in summaries]


# ---------------------------------------------------------------------------------------------
# Where a sweep stands, read without touching anything.

STATES = ("finished", "running", "unfinished", "not started")


@dataclasses.dataclass(frozen=True)
class PointStatus:
    """Where one point stands: ``state`` (one of :data:`STATES`) and what it means."""

    name: str
    state: str
    detail: str


def _ago(stamp: Any) -> str:
    try:
        seconds = time.time() - datetime.datetime.fromisoformat(stamp).timestamp()
    except (TypeError, ValueError):
        return "never"
    return f"{seconds:.0f} s ago" if seconds < 120 else f"{seconds / 60:.0f} min ago"


def point_status(run_dir: Path, config: ml_collections.ConfigDict) -> PointStatus:
    """Where the run of ``config`` in ``run_dir`` stands; writes nothing (the lock is only
    probed, see :meth:`RunDir.holder`)."""
    rundir = RunDir(run_dir)
    summary = finished_summary(run_dir, config) if rundir.summary.exists() else None
    if summary is not None:
        best = ("no best pruned model" if summary["best_level"] is None else
                f"best pruned {summary['effective_parameters']} weights (level "
                f"{summary['best_level']}), test error {summary['best_test_error']:.4f}")
        return PointStatus(run_dir.name, "finished", f"{summary['levels_done']} levels, {best}")
    holder = rundir.holder()
    if holder is not None:
        status = read_json(rundir.status)
        status = status if isinstance(status, dict) else {}
        where = (f"level {status['level']}/{status['last_level']} epoch {status['epoch']}/"
                 f"{status['epochs']}" if "level" in status else "starting")
        return PointStatus(run_dir.name, "running", f"{where}, by {holder}; status updated "
                                                    f"{_ago(status.get('updated'))}")
    levels = len({r["level"] for r in rundir.read_rows()}) if rundir.metrics.exists() else 0
    if levels or rundir.checkpoints.exists():
        status = read_json(rundir.status)
        how = "stopped or died"
        if isinstance(status, dict) and "level" in status:
            # "running" with the lock free: its process was killed before it could say so.
            state = "killed" if status.get("state") == "running" else status.get("state")
            how = f"{state} at level {status['level']} epoch {status['epoch']}"
        return PointStatus(run_dir.name, "unfinished", f"{levels} levels done, no worker on it "
                                                       f"({how}): the next worker resumes it")
    return PointStatus(run_dir.name, "not started", "")


def sweep_status(sweep_config: ml_collections.ConfigDict, sweep_dir: str | Path
                 ) -> list[PointStatus]:
    """Where every point of the sweep in ``sweep_dir`` stands; writes nothing.

    Raises:
      ConfigError, RunDirError: as :func:`check_sweep_dir`.
    """
    sweep_points = points(sweep_config)
    root = Path(sweep_dir)
    check_sweep_dir(root, sweep_config, sweep_points)
    return [point_status(root / p.name, p.config) for p in sweep_points]


def format_status(sweep_dir: str | Path, statuses: list[PointStatus]) -> str:
    """A line per point, then the counts of each state."""
    width = max((len(s.name) for s in statuses), default=0)
    lines = [f"{s.name:<{width}}  {s.state:<11}  {s.detail}".rstrip() for s in statuses]
    counts = ", ".join(f"{sum(s.state == state for s in statuses)} {state}" for state in STATES)
    lines.append(f"sweep {sweep_dir}: {len(statuses)} points: {counts}")
    return "\n".join(lines)
