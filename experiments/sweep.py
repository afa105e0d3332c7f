"""Runs (or resumes) the points of a sweep, here or as cluster jobs; or says where it stands.

    python -m experiments.sweep --config=configs/mixture_linear_widths.py:smoke [--sweep_dir=DIR]
    python -m experiments.sweep --config=configs/mnist_widths.py --launcher=slurm --workers=8 \
        --slurm.partition=gpu --slurm.timeout_min=1440
    python -m experiments.sweep --config=configs/mnist_widths.py --status   (or --print_config)

A sweep config (``imp_jax/study/sweep.py``) expands into points, each an ordinary run directory
``<sweep_dir>/<point name>/``; ``--config.x=y`` applies to every point. Without ``--sweep_dir``
the sweep lives in ``runs/<name>-<hash of all but the axes' values>``, so the same command
continues it (finished points skipped, interrupted ones resumed) and a widened axis reuses them.

Without ``--launcher`` this process is one worker. Any number of workers may share a sweep
directory: each trains the points no other worker holds, and exits when none is left for it.
``--launcher=slurm --workers=N`` submits N worker jobs through submitit and returns;
``--launcher=local`` runs them here and waits. ``--status`` touches nothing. A bad value stops
everything before any point runs, with one ``error:`` line naming the field (exit status 2).
When every point is finished, the study table is printed and written to ``<sweep_dir>/study.csv``
with the figures in ``<sweep_dir>/plots/``.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
import time
from pathlib import Path

from absl import flags
from ml_collections import config_flags

from experiments import cli
from imp_jax.run import config as config_lib
from imp_jax.run import driver
from imp_jax.study import cluster, report
from imp_jax.study import sweep as sweep_lib

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Sweep config file (configs/NAME.py[:arg]); override fields as "
    "--config.a.b=value (documented in imp_jax/run/config.py and imp_jax/study/sweep.py).",
    lock_config=True)
_SWEEP_DIR = flags.DEFINE_string("sweep_dir", "", "Sweep directory (default: derived from the "
                                                  "config).")
_LOG_LEVELS = flags.DEFINE_bool("log_levels", False, "Also log every level of every point.")
_PRINT = flags.DEFINE_bool("print_config", False, "Print the resolved sweep config, its points "
                           "and what running would do to each; then exit without training or "
                           "writing.")
_STATUS = flags.DEFINE_bool("status", False, "Print where every point stands (finished, running "
                            "with its level and epoch, unfinished, not started); write nothing.")
_JOBS = cli.define_worker_flags("this process is one worker", "")
flags.mark_flags_as_required(["config"])


def print_plan(config, sweep_dir: str) -> None:
    """The resolved config, then each point's run directory and what running would do to it."""
    points = sweep_lib.points(config)
    sweep_lib.check_sweep_dir(Path(sweep_dir), config, points)
    print(config_lib.describe(config))
    print(f"\nsweep directory: {sweep_dir}")
    for point in points:
        path = os.path.join(sweep_dir, point.name)
        print(f"  {point.name}: {path} {driver.plan(point.config, path)}")


def work(config, sweep_dir: str) -> bool:
    """Runs the sweep here, or through the launcher; whether every point is now finished."""
    if _JOBS.launcher.value is None:
        sweep_lib.run_sweep(config, sweep_dir)
    else:
        jobs = cluster.launch(config, sweep_dir, **_JOBS.launch())
        if _JOBS.launcher.value == "slurm":
            same = " ".join(shlex.quote(a) for a in sys.argv[1:] if a.startswith("--config"))
            print(f"submitted; follow the sweep with: python -m experiments.sweep {same} "
                  f"--sweep_dir={sweep_dir} --status")
            return False
        cluster.wait(jobs)
    statuses = sweep_lib.sweep_status(config, sweep_dir)
    if any(s.state != "finished" for s in statuses):
        print(sweep_lib.format_status(sweep_dir, statuses))
        logging.info("other workers hold the points left; the last one prints the study table")
        return False
    return True


def main(argv: list[str]) -> int:
    if not _LOG_LEVELS.value:  # one line per point
        logging.getLogger(driver.__name__).setLevel(logging.WARNING)
    config = _CONFIG.value
    sweep_dir = _SWEEP_DIR.value or sweep_lib.default_sweep_dir(config)
    start = time.perf_counter()
    if _PRINT.value:
        return cli.call(lambda: print_plan(config, sweep_dir))[1] or 0
    if _STATUS.value:
        return cli.call(lambda: print(sweep_lib.format_status(
            sweep_dir, sweep_lib.sweep_status(config, sweep_dir))))[1] or 0
    finished, code = cli.call(lambda: work(config, sweep_dir))
    if code is not None or not finished:
        return code or 0
    logging.info("sweep in %s finished in %.1f s", sweep_dir, time.perf_counter() - start)
    try:
        print(report.report_sweeps([sweep_dir], csv_path=os.path.join(sweep_dir, "study.csv")))
    except Exception:  # every point is saved and finished: a table must not turn it into a failure
        cli.log_failure("the study report", f"python -m experiments.report {sweep_dir}")
    return 0


if __name__ == "__main__":
    cli.main(main, _CONFIG)
