"""Dense vs best pruned model of one or more runs: a table, a CSV file and each run's figures.

    python -m experiments.report RUN_DIR [RUN_DIR ...] [--csv=PATH] [--noplots]

Prints a markdown table to stdout with, for every run, the dense model (level 0), the best pruned
model (lowest mean test error) and, when the run held out a validation split, the model selected
on it: level, remaining kernel weights, test error, ECE on clean and on noisy test labels, NLL,
overconfidence and, for mixture tasks, the mean |p_model - p_true| on fresh points (mean ± std
over replicates). The same numbers go to a CSV file (``--csv``; by default ``report.csv`` in the
first RUN_DIR) with the means and standard deviations in separate columns. Unless ``--noplots``,
every run's figures are redrawn into ``RUN_DIR/plots/`` (this restores checkpoints and loads the
run's data). A path that is not a run directory stops the report before any work, with one line
on stderr and exit status 2.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags
from absl import logging as absl_logging

from imp_jax import analysis, imp, plots
from imp_jax.rundir import RunDir, RunDirError

_CSV = flags.DEFINE_string("csv", "", "CSV output path (default: RUN_DIR/report.csv of the "
                                      "first run).")
_PLOTS = flags.DEFINE_bool("plots", True, "Redraw every run's figures into RUN_DIR/plots/.")

# (column title, metric name; {b} is the run's ECE bin count).
METRIC_COLUMNS = (("test error", "test_error"), ("ECE (clean)", "test_ece_{b}"),
                  ("ECE (noisy)", "test_noisy_ece_{b}"), ("NLL", "test_nll"),
                  ("overconfidence", "test_overconfidence"), ("|p - p_true|", "true_abs_error"))
CSV_NAMES = {"test error": "test_error", "ECE (clean)": "ece_clean", "ECE (noisy)": "ece_noisy",
             "NLL": "nll", "overconfidence": "overconfidence", "|p - p_true|": "true_abs_error"}
MODEL_NAMES = {"dense": "dense", "best": "best pruned", "best_val": "best pruned (val)"}


class ReportError(Exception):
    """A run directory cannot be reported on."""


def load_rows(path: str) -> tuple[list[dict[str, Any]], int]:
    """The metrics rows and ECE bin count of the run in ``path``.

    Raises:
      ReportError: ``path`` is not a run directory, or the run has no finished level.
    """
    rundir = RunDir(path)
    if not rundir.root.is_dir():
        raise ReportError(f"{path} is not a directory")
    if not rundir.config.is_file():
        raise ReportError(f"{path} is not an imp_jax run directory (no config.json)")
    try:
        num_bins = int(json.loads(rundir.config.read_text())["eval"]["num_bins"])
        rows = rundir.read_rows()
    except (ValueError, KeyError, TypeError, RunDirError) as e:
        raise ReportError(f"{path}: unreadable run directory ({e})") from e
    if not rows:
        raise ReportError(f"{path} has no finished level yet (metrics.jsonl is empty or missing)")
    return rows, num_bins


def table_rows(run: str, rows: list[dict[str, Any]], num_bins: int) -> list[dict[str, Any]]:
    """One record per compared model of a run: run, model, level, weights and, per metric
    column, ``(mean, std)`` or None where the run lacks the metric."""
    summary = analysis.summarise(rows, num_bins=num_bins)
    records = []
    for key, model in summary["models"].items():
        record = {"run": run, "model": MODEL_NAMES[key], "level": model["level"],
                  "weights": model["remaining_weights"]}
        for title, metric in METRIC_COLUMNS:
            value = model["metrics"].get(metric.format(b=num_bins))
            record[title] = None if value is None else (value["mean"], value["std"])
        records.append(record)
    return records


def _columns(records: list[dict[str, Any]]) -> list[str]:
    # The mixture-only column is shown only when some run has it.
    return ["run", "model", "level", "weights",
            *(t for t, _ in METRIC_COLUMNS if any(r[t] is not None for r in records))]


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, tuple):
        mean, std = value
        return "–" if mean is None else f"{mean:.4f} ± {std or 0.0:.4f}"
    return str(value)


def markdown(records: list[dict[str, Any]]) -> str:
    """The records as a markdown table (mean ± std over replicates)."""
    columns = _columns(records)

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", r"\|") for c in cells) + " |"

    return "\n".join([line(columns), "|" + "---|" * len(columns),
                      *(line([_cell(r[c]) for c in columns]) for r in records)])


def write_csv(records: list[dict[str, Any]], path: Path) -> None:
    """The records as CSV: metric means under snake_case names, stds under ``<name>_std``."""
    columns = _columns(records)
    header = columns[:4] + [n for c in columns[4:] for n in (CSV_NAMES[c], CSV_NAMES[c] + "_std")]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for r in records:
            values = [r[c] for c in columns[:4]]
            for c in columns[4:]:
                values += ["", ""] if r[c] is None else list(r[c])
            writer.writerow(values)


def main(argv: list[str]) -> int:
    absl_logging.get_absl_handler().setFormatter(
        logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    absl_logging.set_verbosity(absl_logging.INFO)
    for noisy in ("absl", "jax._src.xla_bridge", "orbax", "tensorflow_datasets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    run_dirs = argv[1:]
    if not run_dirs:
        raise app.UsageError("give at least one run directory")
    try:  # every path is checked before any figure is drawn
        loaded = {path: load_rows(path) for path in run_dirs}
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    records = [r for path, (rows, bins) in loaded.items() for r in table_rows(path, rows, bins)]
    if _PLOTS.value:
        for path in run_dirs:
            run = imp.open_run(path)
            try:
                written = plots.write_run_plots(run)
            finally:
                run.ckpt.close()
            logging.info("%s: wrote %d figure files to %s", path, len(written), run.dir.plots)
    print(markdown(records))
    csv_path = Path(_CSV.value or Path(run_dirs[0]) / "report.csv")
    write_csv(records, csv_path)
    logging.info("wrote %s", csv_path)
    return 0


if __name__ == "__main__":
    app.run(main)
