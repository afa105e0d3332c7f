"""Dense vs best pruned model of runs or of whole sweeps: tables, CSV files and figures.

    python -m experiments.report RUN_DIR [RUN_DIR ...] [--csv=PATH] [--noplots] [--redraw]
    python -m experiments.report SWEEP_DIR [SWEEP_DIR ...] [--csv=PATH] [--noplots]

Prints the tables of :mod:`imp_jax.study.report` and, with ``--csv=PATH``, writes them as CSV (a
sweep's companion tables beside it as ``<stem>_paper.csv`` and ``<stem>_calibration.csv``);
unless ``--noplots``, draws the figures into ``RUN_DIR/plots/`` (those older than the run's
metrics; ``--redraw`` draws all) or the study figures into ``SWEEP_DIR/plots/``. It writes
nothing else: run directories are read, never claimed or repaired, also while another process
trains in them. A path that is neither stops the report before any work, with one line on
stderr and exit status 2; so does mixing run and sweep directories.
"""

from __future__ import annotations

from absl import app, flags

from experiments import cli
from imp_jax.study import report

_CSV = flags.DEFINE_string("csv", "", "Also write the table as CSV to this path (a sweep's "
                                      "companion tables beside it); none by default.")
_PLOTS = flags.DEFINE_bool("plots", True, "Draw every run's figures into RUN_DIR/plots/, or "
                                          "the study figures of sweeps.")
_REDRAW = flags.DEFINE_bool("redraw", False, "Draw run figures even when they are newer than "
                                             "the run's metrics.")


def main(argv: list[str]) -> int:
    paths = argv[1:]
    if not paths:
        raise app.UsageError("give at least one run or sweep directory")

    def tables() -> str:
        sweeps = [path for path in paths if report.is_sweep(path)]
        if sweeps and len(sweeps) < len(paths):
            raise report.ReportError("give either run directories or sweep directories, not "
                                     "both")
        if sweeps:
            return report.report_sweeps(sweeps, csv_path=_CSV.value, draw=_PLOTS.value,
                                        comparisons=True)
        return report.report_runs(paths, csv_path=_CSV.value, draw=_PLOTS.value,
                                  redraw=_REDRAW.value)

    return cli.print_call(tables)


if __name__ == "__main__":
    cli.main(main, arguments=True)
