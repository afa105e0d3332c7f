"""Runs (or resumes) every point of a sweep, then prints the study table.

    python -m experiments.sweep --config=configs/mixture_linear_widths.py:smoke [--sweep_dir=DIR]
    python -m experiments.sweep --config=configs/mixture_linear_widths.py --print_config

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

import logging
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags
from ml_collections import config_flags

from experiments import cli
from imp_jax import config as config_lib
from imp_jax import imp, report
from imp_jax import sweep as sweep_lib

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Sweep config file (configs/NAME.py[:arg]); override fields as "
    "--config.a.b=value (documented in imp_jax/config.py and imp_jax/sweep.py).",
    lock_config=True)
_SWEEP_DIR = flags.DEFINE_string("sweep_dir", "", "Sweep directory (default: derived from the "
                                                  "config).")
_LOG_LEVELS = flags.DEFINE_bool("log_levels", False, "Also log every level of every point.")
_PRINT = flags.DEFINE_bool("print_config", False, "Print the resolved sweep config, its points "
                           "and what running would do to each; then exit without training or "
                           "writing.")
flags.mark_flags_as_required(["config"])


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    cli.setup_logging()
    if not _LOG_LEVELS.value:  # one line per point
        logging.getLogger(imp.__name__).setLevel(logging.WARNING)
    config = _CONFIG.value
    start = time.perf_counter()

    def sweep() -> str:
        sweep_dir = _SWEEP_DIR.value or sweep_lib.default_sweep_dir(config)
        if _PRINT.value:
            points = sweep_lib.points(config)
            sweep_lib.check_sweep_dir(Path(sweep_dir), config, points)
            print(config_lib.describe(config))
            print(f"\nsweep directory: {sweep_dir}")
            for point in points:
                path = os.path.join(sweep_dir, point.name)
                print(f"  {point.name}: {path} {imp.plan(point.config, path)}")
            return sweep_dir
        sweep_lib.run_sweep(config, sweep_dir)
        return sweep_dir

    sweep_dir, code = cli.call(sweep)
    if code is not None or _PRINT.value:
        return code or 0
    logging.info("sweep in %s finished in %.1f s", sweep_dir, time.perf_counter() - start)
    try:
        print(report.report_sweeps([sweep_dir]))
    except Exception:  # every point is saved and finished: a table must not turn it into a failure
        cli.log_failure("the study report", f"python -m experiments.report {sweep_dir}")
    return 0


if __name__ == "__main__":
    app.run(main, flags_parser=lambda argv: cli.parse_flags(argv, _CONFIG))
