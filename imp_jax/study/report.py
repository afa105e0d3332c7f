"""Reports on runs and sweeps: dense vs best pruned tables, the study tables, CSV files and the
figures, read from run directories without changing them.

For run directories (:func:`report_runs`): a markdown table with, for every run, the dense model
(level 0), the best pruned model (the minimum of the second descent, see
:func:`imp_jax.core.analysis.sparse_minimum`; marked while not reached) and, when the run held out a
validation split, the model selected on it: level, remaining kernel weights, test error, ECE on
clean and on noisy test labels, NLL, overconfidence and, for mixture tasks, the mean |p_model -
p_true| on fresh points (mean ± std over replicates); the same as CSV, with the means and
standard deviations in separate columns; and each run's figures in ``RUN_DIR/plots/``, drawn
unless every one of them is there and newer than its ``metrics.jsonl``.

For sweep directories (:func:`report_sweeps`; those of ``python -m experiments.sweep``, holding
``sweep.json``): the study table, one line per setting (the runs of different seeds pooled):
dense weights, test error and ECE, the best pruned level, the effective number of parameters
(and its mean ± std over replicates), the best pruned model's test error and ECE, and where the
sparse double descent stands. For width sweeps two more tables follow: the study's own (per
width: full and best pruned weights, their test errors) and the calibration of every full and
best pruned network beside the best small full one (the width whose full network errs least).
The study figures are drawn from the metrics alone.

Readers take no lock and write only what they are asked to produce (figures under ``plots/``
and the CSV files); a run another process is training is reported as it stands.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
from pathlib import Path
from typing import Any

import ml_collections

from imp_jax import export
from imp_jax.core import analysis, row_metrics
from imp_jax.core.records import ModelRecord, Stat, StudyRecord
from imp_jax.data import tasks
from imp_jax.plots import run as run_plots
from imp_jax.plots import study as study_plots
from imp_jax.run import driver
from imp_jax.run.checkpoints import CheckpointError
from imp_jax.run.rundir import RunDir, RunDirError, read_json, write_atomic
from imp_jax.study.sweep import SWEEP_FILE


def metric_columns() -> list[tuple[str, str]]:
    """(column title, metric name; ``{b}`` is the run's ECE bin count) of the reports' metric
    columns (:mod:`imp_jax.core.row_metrics`)."""
    return [(m.title, m.name) for m in row_metrics.METRICS.values() if m.column]


def csv_names() -> dict[str, str]:
    """The CSV name of each column title."""
    return {"compact shape": "compact_shape",
            **{m.title: m.column for m in row_metrics.METRICS.values() if m.column}}

MODEL_NAMES = {"dense": "dense", "best": "best pruned", "best_val": "best pruned (val)"}


class ReportError(Exception):
    """A run directory cannot be reported on."""


def load_rows(path: str) -> tuple[list[dict[str, Any]], int]:
    """The metrics rows and ECE bin count of the run in ``path``.

    Raises:
      ReportError: ``path`` is not a run directory, or the run has no finished level.
    """
    rundir = RunDir(path)
    if not rundir.root.exists():
        raise ReportError(f"{path} does not exist (not started yet, or a mistyped path)")
    if not rundir.root.is_dir():
        raise ReportError(f"{path} is not a directory")
    if not rundir.config.is_file():
        raise ReportError(f"{path} is not an imp_jax run directory (no config.json)")
    try:
        num_bins = int(rundir.stored_config().eval.num_bins)
        rows = rundir.read_rows()
    except (ValueError, KeyError, TypeError, AttributeError, RunDirError) as e:
        raise ReportError(f"{path}: unreadable run directory ({e})") from e
    if not rows:
        raise ReportError(f"{path} has no finished level yet (metrics.jsonl is empty or missing)")
    return rows, num_bins


def _pair(value: Stat | None) -> tuple[float | None, float | None] | None:
    return None if value is None else (value.mean, value.std)


def table_rows(run: str, rows: list[dict[str, Any]], num_bins: int) -> list[dict[str, Any]]:
    """One record per compared model of a run: run, model, level, weights and, per metric
    column, ``(mean, std)`` or None where the run lacks the metric. While the minimum is not
    reached, the best pruned model's record says so and holds no values."""
    summary = analysis.run_summary(rows, num_bins=num_bins)
    records = []
    for key in ("dense", "best", *(["best_val"] if "best_val" in summary.models else [])):
        model = summary.models.get(key)
        if model is None:
            records.append({"run": run, "model": f"{MODEL_NAMES[key]} ({summary.status})",
                            "level": None, "weights": None, "compact shape": None,
                            **{title: None for title, _ in metric_columns()}})
            continue
        record = {"run": run, "model": MODEL_NAMES[key], "level": model.level,
                  "weights": model.remaining_weights,
                  "compact shape": compact_shape(run, model.level)}
        for title, metric in metric_columns():
            record[title] = _pair(model.metric(metric.format(b=num_bins)))
        records.append(record)
    return records


def compact_shape(run: str, level: int) -> str | None:
    """The widths of a level's compact export (:func:`imp_jax.export.compact`), the units its
    network really uses, e.g. ``784-61-10``; the replicates' shapes joined by `` / `` where
    they differ; None for a model that cannot be compacted or a level without a readable
    checkpoint (said in the log, with the command that trains it again)."""
    try:
        shapes = export.compact_shapes(run, level)
    except CheckpointError as e:
        logging.warning("%s: no compact shape of level %d: %s", run, level, e)
        return None
    except export.ExportError:
        return None
    return " / ".join(dict.fromkeys(shapes))


def _columns(records: list[dict[str, Any]]) -> list[str]:
    # The mixture-only column is shown only when some run has it.
    return ["run", "model", "level", "weights",
            *(["compact shape"] if any(r.get("compact shape") for r in records) else []),
            *(t for t, _ in metric_columns() if any(r[t] is not None for r in records))]


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, tuple):
        mean, std = value
        if isinstance(mean, int):  # a count
            return f"{mean} ± {std}"
        return "–" if mean is None else f"{mean:.4f} ± {std or 0.0:.4f}"
    return str(value)


def markdown(records: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    """The records as a markdown table (mean ± std over replicates); ``columns`` default to
    those of :func:`table_rows` records."""
    columns = columns or _columns(records)

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", r"\|") for c in cells) + " |"

    return "\n".join([line(columns), "|" + "---|" * len(columns),
                      *(line([_cell(r[c]) for c in columns]) for r in records)])


def _check_target(path: Path) -> None:
    if path.is_dir():
        raise ReportError(f"cannot write {path}: it is a directory; give a file name, e.g. "
                          f"--csv={path / 'report.csv'}")


def write_csv(records: list[dict[str, Any]], path: Path, columns: list[str] | None = None,
              names: dict[str, str] | None = None) -> None:
    """The records as CSV, each column under its name in ``names`` (default
    :func:`csv_names`; else its title); a column of ``(mean, std)`` cells becomes two, the
    second ``<name>_std``."""
    columns = columns or _columns(records)
    names = csv_names() if names is None else names
    paired = {c for c in columns if any(isinstance(r[c], tuple) for r in records)}
    header = [n for c in columns
              for n in ((names.get(c, c), names.get(c, c) + "_std") if c in paired
                        else (names.get(c, c),))]
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(header)
    for r in records:
        values = []
        for c in columns:
            if c not in paired:
                values.append("" if r[c] is None else r[c])
            else:
                values += ["", ""] if r[c] is None else list(r[c])
        writer.writerow(values)
    _check_target(path)
    try:
        write_atomic(path, text.getvalue())
    except RunDirError as e:
        raise ReportError(str(e)) from e


# ---------------------------------------------------------------------------------------------
# Sweeps.

# Study table columns after the sweep and its axes: (title, CSV name).
STUDY_COLUMNS = (("replicates", "replicates"), ("weights", "weights"),
                 ("test error (dense)", "dense_test_error"), ("ECE (dense)", "dense_ece"),
                 ("best level", "best_level"), ("effective parameters", "effective_parameters"),
                 ("effective (per replicate)", "effective_parameters_replicates"),
                 ("test error (best)", "best_test_error"), ("ECE (best)", "best_ece"),
                 ("SDD", "status"))


def is_sweep(path: str) -> bool:
    """Whether ``path`` is a sweep directory (it holds ``sweep.json``)."""
    return (Path(path) / SWEEP_FILE).is_file()


@dataclasses.dataclass(frozen=True)
class Study:
    """The records (:func:`imp_jax.core.analysis.study_records`) of one sweep directory."""

    path: Path
    label: str  # the sweep's config name
    axes: list[str]  # swept axes shown in tables and figures (the seeds are pooled)
    records: list[StudyRecord]
    num_bins: int


def load_study(path: str) -> Study:
    """Reads ``sweep.json`` and every started point's metrics rows.

    Raises:
      ReportError: ``sweep.json`` is missing (the sweep was never started) or unreadable, or no
        point has a finished level yet.
    """
    root = Path(path)
    if not (root / SWEEP_FILE).exists():
        raise ReportError(f"{path}: not started yet (no {SWEEP_FILE})")
    try:
        sweep = json.loads((root / SWEEP_FILE).read_text())
        points = [(p["values"], root / p["dir"]) for p in sweep["points"]]
        label = sweep["name"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ReportError(f"{path}: unreadable {SWEEP_FILE} ({e})") from e
    loaded, unfinished = [], set()
    num_bins = None
    for values, run_dir in points:
        try:
            rows, num_bins = load_rows(str(run_dir))
        except ReportError as e:
            logging.info("%s: leaving out %s (%s)", path, run_dir.name, e)
            continue
        loaded.append((values, rows))
        summary = read_json(RunDir(run_dir).summary)  # None: killed before its first one
        if not (isinstance(summary, dict) and summary.get("finished")):
            unfinished.add(tuple(sorted((k, v) for k, v in values.items() if k != "seed")))
    if num_bins is None:
        raise ReportError(f"{path}: no point of the sweep has a finished level yet")
    records = analysis.study_records(loaded, num_bins=num_bins)
    records = [dataclasses.replace(r, status=f"{r.status} (unfinished)")
               if tuple(sorted(r.values.items())) in unfinished else r for r in records]
    axes = [a for a in ("width", "nu") if any(a in values for values, _ in points)]
    return Study(root, label, axes, records, num_bins)


def _rounded(pair: tuple[float | None, float | None]) -> tuple[int, int] | None:
    """A count's ``(mean, std)`` rounded to whole weights; None when no replicate has one."""
    mean, std = pair
    return None if mean is None else (round(mean), round(std or 0.0))


def study_rows(study: Study) -> list[dict[str, Any]]:
    """One table record per setting of the study (``(mean, std)`` cells over replicates)."""
    pair = _pair
    ece = f"test_ece_{study.num_bins}"
    out = []
    for r in study.records:
        best = r.best  # None: minimum not reached
        out.append({
            "sweep": study.label, **{a: r.values.get(a) for a in study.axes},
            "replicates": r.replicates, "weights": r.total_weights,
            "test error (dense)": pair(r.dense.metric("test_error")),
            "ECE (dense)": pair(r.dense.metric(ece)),
            "best level": r.best_level, "effective parameters": r.effective_parameters,
            # Per-replicate minima only beside a reached mean minimum: else one replicate's
            # minimum would read like the study's.
            "effective (per replicate)": None if r.effective_parameters is None else
            _rounded(pair(r.effective_parameters_replicates)),
            "test error (best)": pair(best.metric("test_error")) if best else None,
            "ECE (best)": pair(best.metric(ece)) if best else None, "SDD": r.status})
    return out


# The study's own table: per width, the full and the best pruned network's kernel weights and
# test errors (mean ± std over replicates): (title, CSV name).
PAPER_COLUMNS = (("full weights", "full_weights"), ("best pruned weights", "best_weights"),
                 ("test error (full)", "full_test_error"),
                 ("test error (pruned)", "best_test_error"))


def paper_rows(study: Study) -> list[dict[str, Any]]:
    """One record per setting in the study's own table format (see :data:`PAPER_COLUMNS`)."""
    out = []
    for r in study.records:
        out.append({"sweep": study.label, **{a: r.values.get(a) for a in study.axes},
                    "full weights": r.total_weights,
                    "best pruned weights": r.effective_parameters,
                    "test error (full)": _pair(r.dense.metric("test_error")),
                    "test error (pruned)": _pair(r.best.metric("test_error")) if r.best
                    else None})
    return out


def calibration_rows(study: Study) -> list[dict[str, Any]]:
    """The study's comparison of the best pruned models with the full networks and the best
    small full network (the width whose full network errs least,
    :func:`imp_jax.core.analysis.best_small_full`): one record per model, with the columns of
    :func:`metric_columns` (calibration and, for mixtures, |p - p_true|)."""

    def record(kind: str, r: StudyRecord, model: ModelRecord) -> dict[str, Any]:
        values = ", ".join(f"{k}={v:g}" for k, v in r.values.items())
        out = {"sweep": study.label, "model": f"{kind} ({values})", "level": model.level,
               "weights": model.remaining_weights}
        for title, metric in metric_columns():
            out[title] = _pair(model.metric(metric.format(b=study.num_bins)))
        return out

    rows = [record("best small full", small["record"], small["record"].dense)
            for small in analysis.best_small_full(study.records)]
    for r in study.records:
        rows.append(record("full", r, r.dense))
        if r.best is not None:
            rows.append(record("best pruned", r, r.best))
    return rows


def _series(studies: list[Study], axis: str) -> dict[str, list[StudyRecord]]:
    """Records of the studies sweeping ``axis``, one series per sweep and value of the other
    axes."""
    series: dict[str, list[StudyRecord]] = {}
    for study in studies:
        for r in study.records:
            if axis in r.values:
                others = ", ".join(f"{k}={v:g}" for k, v in r.values.items() if k != axis)
                series.setdefault(study.label + (f" ({others})" if others else ""), []).append(r)
    return series


def write_study_plots(studies: list[Study]) -> list[Path]:
    """The study figures (see the module docstring); returns the paths."""
    paths = []
    for study in studies:
        if "width" in study.axes:
            paths += study_plots.study_double_descent(study.records, study.path / "plots",
                                                title=study.label)
    out = studies[0].path / "plots"
    for axis, against in (("width", "weights"), ("nu", "nu")):
        series = _series(studies, axis)
        if any(r.effective_parameters is not None for s in series.values() for r in s):
            paths += study_plots.effective_parameters(series, out, against=against)
        elif series:
            logging.info("no effective number of parameters against %s yet: no point has "
                         "passed its minimum", against)
    return paths


STUDY_TITLE = "Study: the dense and the best pruned model of every setting"
STUDY_LEGEND = (
    "± is the standard deviation over replicates (the runs of every seed pooled); – is not "
    "known yet. SDD, where each setting's sparse double descent stands: *minimum passed*, "
    "the test error fell to its sparse minimum and pruning went on past it; *collapsed*, "
    "pruning past the minimum made the error worse than the dense model's, the usual end of "
    "a finished path; *minimum not yet reached*, the error is still falling at the last "
    "level, so there is no best pruned model and no effective number of parameters yet.")
# (title, legend) of the width sweeps' two comparison tables.
COMPARISON_TITLES = {
    "paper": ("The study's table: full and best pruned weights and test error per width",
              "Weights are kernel weights; ± is the standard deviation over replicates; – is "
              "not known yet (no best pruned model)."),
    "calibration": ("Calibration: every full and best pruned network, and the best small "
                    "full one",
                    "The best small full network is the width whose full network errs least. "
                    "ECE against clean and against noisy test labels, NLL and overconfidence "
                    "on the test set (|p - p_true| on fresh points, for mixtures); ± is the "
                    "standard deviation over replicates."),
}


def report_sweeps(paths: list[str], *, csv_path: str = "", draw: bool = True,
                  comparisons: bool = False) -> str:
    """Loads the sweeps in ``paths`` and returns the markdown table; writes it as CSV to
    ``csv_path`` only if one is given, and the study figures if ``draw``.

    With ``comparisons``, also the study's own table (:func:`paper_rows`) and the calibration of
    full, best small full and best pruned networks (:func:`calibration_rows`) of the width
    sweeps, each after a blank line and, with ``csv_path``, written beside it as
    ``<stem>_paper.csv`` and ``<stem>_calibration.csv``.

    Raises:
      ReportError: a path is not a readable sweep with a finished level.
    """
    studies = [load_study(path) for path in paths]
    axes = [a for a in ("width", "nu") if any(a in s.axes for s in studies)]
    records = [{**dict.fromkeys(axes), **r} for s in studies for r in study_rows(s)]
    columns = ["sweep", *axes, *(title for title, _ in STUDY_COLUMNS)]
    path = Path(csv_path) if csv_path else None
    if path:
        write_csv(records, path, columns, dict(STUDY_COLUMNS))
        logging.info("wrote %s", path)
    tables = [f"### {STUDY_TITLE}\n\n{markdown(records, columns)}\n\n{STUDY_LEGEND}"]
    widths = [s for s in studies if "width" in s.axes]
    if comparisons and widths:
        paper = [{**dict.fromkeys(axes), **r} for s in widths for r in paper_rows(s)]
        paper_columns = ["sweep", *axes, *(title for title, _ in PAPER_COLUMNS)]
        calibration = [r for s in widths for r in calibration_rows(s)]
        calibration_columns = ["sweep", *_columns(calibration)[1:]]
        for name, rows, cols, names in (
                ("paper", paper, paper_columns, dict(PAPER_COLUMNS)),
                ("calibration", calibration, calibration_columns, None)):
            title, legend = COMPARISON_TITLES[name]
            if path:
                extra = path.with_name(f"{path.stem}_{name}.csv")
                write_csv(rows, extra, cols, names)
                logging.info("wrote %s", extra)
            tables.append(f"### {title}\n\n{markdown(rows, cols)}\n\n{legend}")
    if draw:
        written = write_study_plots(studies)
        logging.info("wrote %d study figure files", len(written))
    return "\n\n".join(tables)




# ---------------------------------------------------------------------------------------------
# Runs.


# The figures of a run (:func:`imp_jax.plots.run.write_run_plots`), and of a mixture task's run.
RUN_FIGURES = ("sdd_curve", "ece_curve", "calibration")
MIXTURE_FIGURES = ("mixture_profile", "mixture_vs_true", "mixture_error_map")


def expected_figures(config: ml_collections.ConfigDict) -> list[str]:
    """The files :func:`imp_jax.plots.run.write_run_plots` writes for a run of ``config``."""
    names = RUN_FIGURES + (MIXTURE_FIGURES if tasks.get(config.data.name).is_mixture else ())
    return [f"{name}.{ext}" for name in names for ext in ("png", "pdf")]


def figures_up_to_date(path: str) -> bool:
    """Whether every figure of the run is there and was drawn after its last metrics row
    (nothing to redraw); a drawing killed half-way leaves some missing or older."""
    rundir = RunDir(path)
    try:
        config = rundir.stored_config()
    except RunDirError:
        return False
    if config is None or not rundir.metrics.exists():
        return False
    rows_written = rundir.metrics.stat().st_mtime
    figures = [rundir.plots / name for name in expected_figures(config)]
    return all(f.is_file() and f.stat().st_mtime > rows_written for f in figures)


def draw_run_figures(path: str, *, redraw: bool = False) -> list[Path]:
    """Draws the figures of the run in ``path`` into its ``plots/`` (restoring its dense and
    best pruned levels, read-only), unless they are up to date and ``redraw`` is False;
    returns the paths written."""
    if not redraw and figures_up_to_date(path):
        logging.info("%s: the figures are up to date (--redraw draws them again)", path)
        return []
    with driver.open_run(path) as run:
        written = run_plots.write_run_plots(run)
    logging.info("%s: wrote %d figure files to %s", path, len(written), RunDir(path).plots)
    return written


def in_progress(path: str) -> str | None:
    """Who trains the run in ``path`` now (its lock's holder), or None."""
    return RunDir(path).holder()


RUNS_TITLE = "The dense and the best pruned model of every run"
RUNS_LEGEND = ("Level 0 is the dense model; the best pruned one is the sparse minimum of the "
               "test error (*best pruned (val)*: chosen on the validation split). ECE against "
               "clean and against noisy test labels; ± is the standard deviation over "
               "replicates; – is not known yet (minimum not yet reached).")


def report_runs(paths: list[str], *, csv_path: str = "", draw: bool = True,
                redraw: bool = False) -> str:
    """The markdown table of the runs in ``paths`` (see the module docstring), also written as
    CSV to ``csv_path`` if one is given, and their figures if ``draw``.

    Raises:
      ReportError: a path is not a run with a finished level (checked before anything is
        drawn), or the CSV cannot be written.
    """
    loaded = {path: load_rows(path) for path in paths}
    records = []
    for path, (rows, bins) in loaded.items():
        holder = in_progress(path)
        if holder:
            logging.info("%s: in progress (%s); reporting its finished levels", path, holder)
        try:
            records += table_rows(path, rows, bins)
        except ValueError as e:  # rows without a metric the config names
            raise ReportError(f"{path}: {e}; if config.json was edited, put back the config "
                              f"the run was trained with") from e
    target = Path(csv_path) if csv_path else None
    if target:
        _check_target(target)
    if draw:
        for path in paths:
            draw_run_figures(path, redraw=redraw)
    if target:
        write_csv(records, target)
        logging.info("wrote %s", target)
    return f"### {RUNS_TITLE}\n\n{markdown(records)}\n\n{RUNS_LEGEND}"
