"""Runs (or resumes) every point of a sweep, then prints the study table.

    python -m experiments.sweep --config=configs/mixture_linear_widths.py:smoke [--sweep_dir=DIR]

The config is a sweep config (see ``imp_jax/sweep.py``); every ``--config.x=y`` override applies
to every point, and ``--config.sweep.width='(5,10)'`` changes an axis. Each point is an ordinary
run directory ``<sweep_dir>/<point name>/`` (e.g. ``width=300``), run in order: a point whose
``summary.json`` says finished (with the same stop conditions) is skipped without loading its
data, an interrupted one resumes where it stopped. ``<sweep_dir>/sweep.json`` lists the points
and their directories. Without ``--sweep_dir`` the sweep lives in ``runs/<name>-<hash>``, the
hash of everything but the axes' values: running the same command again continues the sweep,
and widening an axis reuses the points already run.

The whole sweep (every point's config, and the run directories already there) is checked before
any point runs; a bad value stops it with one ``error:`` line naming the field (exit status 2).
At the end the study table is printed and written to ``<sweep_dir>/study.csv``, and the study
figures drawn into ``<sweep_dir>/plots/`` (``python -m experiments.report SWEEP_DIR`` redraws
them).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import ml_collections
from absl import app, flags
from ml_collections import config_flags

from experiments import cli, report
from imp_jax import config as config_lib
from imp_jax import imp
from imp_jax import sweep as sweep_lib
from imp_jax.rundir import RunDir, RunDirError, write_json

_CONFIG = config_flags.DEFINE_config_file("config", None, "Sweep config file "
                                          "(configs/NAME.py[:arg]).", lock_config=True)
_SWEEP_DIR = flags.DEFINE_string("sweep_dir", "", "Sweep directory (default: derived from the "
                                                  "config).")
_LOG_LEVELS = flags.DEFINE_bool("log_levels", False, "Also log every level of every point.")
flags.mark_flags_as_required(["config"])


def default_sweep_dir(config: ml_collections.ConfigDict) -> str:
    """``runs/<name>-<fingerprint of the sweep>`` (see :func:`imp_jax.sweep.fingerprint`)."""
    return os.path.join("runs", f"{config.name}-{sweep_lib.fingerprint(config)}")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def claim(sweep_dir: Path, config: ml_collections.ConfigDict,
          points: list[sweep_lib.Point]) -> None:
    """Checks ``sweep_dir`` can hold this sweep, then writes its ``sweep.json``.

    Raises:
      RunDirError: the directory holds another sweep or is not a sweep directory, or a point's
        run directory holds a run of another config.
    """
    sweep_file = sweep_dir / report.SWEEP_FILE
    fingerprint = sweep_lib.fingerprint(config)
    if sweep_file.exists():
        old = _read_json(sweep_file)
        if not isinstance(old, dict) or old.get("fingerprint") != fingerprint:
            raise RunDirError(f"{sweep_dir} holds another sweep (its {report.SWEEP_FILE} has "
                              f"another fingerprint); choose another --sweep_dir or omit it")
    elif sweep_dir.exists() and (not sweep_dir.is_dir() or any(sweep_dir.iterdir())):
        raise RunDirError(f"{sweep_dir} exists and has no {report.SWEEP_FILE}: not a sweep "
                          f"directory")
    for point in points:
        stored = _read_json(RunDir(sweep_dir / point.name).config)
        if stored is not None and config_lib.identity(ml_collections.ConfigDict(stored)) != \
                config_lib.identity(point.config):
            raise RunDirError(f"{sweep_dir / point.name} holds a run of another config than "
                              f"point {point.name}; choose another --sweep_dir or omit it")
    write_json(sweep_file, {
        "name": config.name, "fingerprint": fingerprint,
        "config": config_lib.to_json_dict(config),
        "points": [{"name": p.name, "values": p.values, "dir": p.name} for p in points]})


def finished_summary(run_dir: Path, config: ml_collections.ConfigDict) -> dict[str, Any] | None:
    """The summary of a finished run in ``run_dir`` stopped by the same conditions as
    ``config`` (``imp.levels``, ``imp.min_weights``), else None (the run must continue)."""
    summary = _read_json(RunDir(run_dir).summary)
    stored = _read_json(RunDir(run_dir).config)
    if not (isinstance(summary, dict) and summary.get("finished") and isinstance(stored, dict)):
        return None
    stops = ("levels", "min_weights")
    same = all(stored.get("imp", {}).get(k) == config.imp[k] for k in stops)
    return summary if same else None


def run_sweep(config: ml_collections.ConfigDict, sweep_dir: str | Path) -> list[dict[str, Any]]:
    """Runs or resumes every point of the sweep ``config`` in ``sweep_dir``, in order; returns
    their summaries.

    Raises:
      imp_jax.config.ConfigError: a bad sweep or point config, before anything is written.
      RunDirError: see :func:`claim`, also before any point runs.
      imp.RunInterruptedError, imp.TrainingDivergedError: from the point being run.
    """
    points = sweep_lib.points(config)
    root = Path(sweep_dir)
    claim(root, config, points)
    summaries = []
    for i, point in enumerate(points, 1):
        start = time.perf_counter()
        summary = finished_summary(root / point.name, point.config)
        done_before = summary is not None
        if summary is None:
            summary = imp.run(point.config, str(root / point.name))
        best = ("no best pruned model yet" if summary["best_level"] is None else
                f"{summary['effective_parameters']} weights (level {summary['best_level']}), "
                f"test error {summary['best_test_error']:.4f}")
        logging.info("point %d/%d %s: %s | %d weights, test error %.4f -> %s | %.1f s", i,
                     len(points), point.name, "finished before" if done_before else "ran",
                     summary["total_weights"], summary["dense_test_error"], best,
                     time.perf_counter() - start)
        summaries.append(summary)
    return summaries


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    cli.setup_logging()
    if not _LOG_LEVELS.value:  # one line per point
        logging.getLogger(imp.__name__).setLevel(logging.WARNING)
    config = _CONFIG.value
    start = time.perf_counter()

    def sweep() -> str:
        sweep_dir = _SWEEP_DIR.value or default_sweep_dir(config)
        run_sweep(config, sweep_dir)
        return sweep_dir

    sweep_dir, code = cli.call(sweep)
    if code is not None:
        return code
    logging.info("sweep in %s finished in %.1f s", sweep_dir, time.perf_counter() - start)
    try:
        print(report.report_sweeps([sweep_dir]))
    except Exception:  # every point is saved and finished: a table must not turn it into a failure
        logging.exception("the study report failed; retry with: python -m experiments.report "
                          "%s", sweep_dir)
    return 0


if __name__ == "__main__":
    app.run(main)
