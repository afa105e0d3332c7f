"""Reproducing the study: its sweeps run (or found finished), then each of its claims a table
of the paper's published values beside ours, with a verdict per row (:mod:`imp_jax.study.claims`).

The sweeps of a scale (``configs/reproduce.py``) are ordinary sweep directories under the output
directory, run by :func:`imp_jax.study.sweep.run_sweep` or as cluster jobs
(:mod:`imp_jax.study.cluster`), so finished points are never trained again and interrupted ones
resume. :func:`claim_tables` reads them only (:class:`StudyData` measures each point from its
rows); :func:`write_report` writes ``REPORT.md``, ``report.html``, one numeric CSV per claim,
``summary.csv`` and the figures, all inside the output directory.
"""

from __future__ import annotations

import dataclasses
import html
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_collections

from imp_jax.core import analysis
from imp_jax.plots import run as run_plots
from imp_jax.plots import study as study_plots
from imp_jax.run import config as config_lib
from imp_jax.run.rundir import RunDir, read_json
from imp_jax.study import claims, cluster, report
from imp_jax.study import sweep as sweep_lib
from imp_jax.study import verdicts as v
from imp_jax.study.claims import Measured, Table

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class StudySweep:
    """One sweep of the study at some scale: its directory name under the output directory,
    its config, the same sweep at the paper's settings, and the claims it feeds."""

    key: str
    config: ml_collections.ConfigDict
    full: ml_collections.ConfigDict
    claims: tuple[str, ...]


# ---------------------------------------------------------------------------------------------
# Running the sweeps.


def _points_done(sweeps: Sequence[StudySweep], out: Path) -> tuple[int, int]:
    states = [s.state for sw in sweeps for s in sweep_lib.sweep_status(sw.config, out / sw.key)]
    return sum(s == "finished" for s in states), len(states)


def _progress(done: int, total: int, ran: int, seconds: float) -> str:
    left = (f"about {(total - done) * seconds / ran / 60:.0f} min left at this call's pace"
            if ran and done < total else "time left: known once a point has run"
            if done < total else "nothing left")
    return f"study: {done}/{total} points finished; {left}"


def run(sweeps: Sequence[StudySweep], out: Path, *, launcher: str | None = None,
        workers: int = 1, slurm: ml_collections.ConfigDict | None = None) -> bool:
    """Runs or resumes every sweep's unfinished points in ``out/<key>``, here or as
    ``workers`` jobs of ``launcher`` (see :func:`imp_jax.study.cluster.launch`); logs the progress
    over the whole study. Returns whether every point is now finished (SLURM jobs are
    submitted and left running).

    Raises:
      ConfigError, RunDirError: a bad sweep, or a directory holding another one, before any
        point runs; and what :func:`imp_jax.study.sweep.run_sweep` raises.
    """
    for s in sweeps:  # every sweep checked before any point runs
        sweep_lib.check_sweep_dir(out / s.key, s.config, sweep_lib.points(s.config))
    start, (done_before, total) = time.perf_counter(), _points_done(sweeps, out)
    log.info(_progress(done_before, total, 0, 0.0))
    if launcher is not None:
        _launch(sweeps, out, launcher, workers, slurm)
        done, _ = _points_done(sweeps, out)
        log.info(_progress(done, total, done - done_before, time.perf_counter() - start))
        return done == total
    for s in sweeps:
        statuses = sweep_lib.sweep_status(s.config, out / s.key)
        if all(st.state == "finished" for st in statuses):
            continue
        log.info("sweep %s: %d points in %s", s.key, len(statuses), out / s.key)
        sweep_lib.run_sweep(s.config, out / s.key)
        done, _ = _points_done(sweeps, out)
        log.info(_progress(done, total, done - done_before, time.perf_counter() - start))
    return _points_done(sweeps, out)[0] == total


def _launch(sweeps: Sequence[StudySweep], out: Path, launcher: str, workers: int,
            slurm: ml_collections.ConfigDict | None) -> None:
    """Submits ``workers`` jobs that share out every unfinished sweep's points (one job array,
    each job passing from sweep to sweep: see :class:`imp_jax.study.cluster.SweepWorker`); waits for
    local jobs."""
    left = [s for s in sweeps if not all(st.state == "finished" for st in
                                         sweep_lib.sweep_status(s.config, out / s.key))]
    if not left:
        return
    log.info("sweeps %s: %d worker(s) share their points", ", ".join(s.key for s in left),
             workers)
    jobs = cluster.launch(left[0].config, out / left[0].key, launcher=launcher, workers=workers,
                          slurm=slurm or cluster.slurm_config(),
                          more=tuple((s.config, out / s.key) for s in left[1:]))
    if launcher == "local":
        cluster.wait(jobs)




# ---------------------------------------------------------------------------------------------
# Measuring the finished points.

# Identity fields that change how precisely a setting is measured, not what it measures: the
# replicate count, and the pruning grid (a count's window spans two of the study's levels).
_PRECISION_FIELDS = ("name", "replicates", "prune.fraction")


def cuts(config: ml_collections.ConfigDict, full: ml_collections.ConfigDict | None
         ) -> tuple[str, ...]:
    """The results-determining fields in which a point's ``config`` differs from the same
    point at the paper's settings (``full``; None: the paper has no such point)."""
    if full is None:
        return ("not a setting of the paper",)
    ours, paper = config_lib.identity(config), config_lib.identity(full)
    return tuple(f"{k} {paper.get(k)!r} -> {ours.get(k)!r}"
                 for k in sorted(set(ours) | set(paper))
                 if k not in _PRECISION_FIELDS and ours.get(k) != paper.get(k))


def _numbers(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[float]]:
    """The numeric fields every row has, per replicate in replicate order."""
    rows = sorted(rows, key=lambda r: r["replicate"])
    keys = [k for k, x in rows[0].items() if isinstance(x, (int, float))
            and not isinstance(x, bool) and all(k in r for r in rows)]
    return {k: [float(r[k]) for r in rows] for k in keys}


def measure(rows: Sequence[Mapping[str, Any]], *, finished: bool, cut: tuple[str, ...] = (),
            grid: float = 1.25, num_bins: int = 15) -> Measured:
    """A run's rows as the claims compare them: its dense level, and the peak and the best
    pruned level of its mean test-error curve (:func:`imp_jax.core.analysis.sparse_minimum`);
    diverged replicates left out."""
    rows = [r for r in rows if not r.get("diverged")]
    curve = analysis.level_curve(rows, "test_error")
    found = analysis.sparse_minimum(curve["mean"], curve["std"])
    by_level: dict[int, list[Mapping[str, Any]]] = {}
    for r in rows:
        by_level.setdefault(int(r["level"]), []).append(r)
    marks = {"dense": 0, "peak": found.peak, "best": found.best}
    levels = {k: None if i is None else _numbers(by_level[curve["level"][i]])
              for k, i in marks.items()}
    weights = {k: None if i is None else round(curve["remaining_weights"][i])
               for k, i in marks.items()}
    why = ("" if found.best is not None else analysis.STATUS_NONE if found.only_hurt else
           "the path stopped before its minimum was passed" if finished else
           "the minimum is not reached yet (the run is unfinished)")
    return Measured(replicates=len(by_level[curve["level"][0]]),
                    total_weights=int(by_level[curve["level"][0]][0]["total_weights"]),
                    levels=levels, weights=weights, why_no_best=why, cuts=cut, grid=grid,
                    num_bins=num_bins)


@dataclasses.dataclass
class StudyData:
    """The measured points of a study's sweeps under ``out``: a :class:`claims.Source` (read
    only)."""

    sweeps: dict[str, StudySweep]
    measured: dict[str, list[tuple[dict[str, float], Measured]]]
    rows: dict[tuple[str, str], list[dict[str, Any]]]  # (sweep, point name) -> its rows

    @classmethod
    def load(cls, sweeps: Sequence[StudySweep], out: Path) -> StudyData:
        """Reads every point that has a finished level."""
        measured: dict[str, list[tuple[dict[str, float], Measured]]] = {}
        rows_of = {}
        for s in sweeps:
            full = {p.name: p.config for p in sweep_lib.points(s.full)}
            measured[s.key] = []
            for point in sweep_lib.points(s.config):
                run_dir = out / s.key / point.name
                try:
                    rows, num_bins = report.load_rows(str(run_dir))
                except report.ReportError as e:
                    log.info("%s/%s: %s", s.key, point.name, e)
                    continue
                summary = read_json(RunDir(run_dir).summary)
                finished = isinstance(summary, dict) and bool(summary.get("finished"))
                values = {k: x for k, x in point.values.items() if k != "seed"}
                measured[s.key].append((values, measure(
                    rows, finished=finished, cut=cuts(point.config, full.get(point.name)),
                    grid=1 / (1 - point.config.prune.fraction), num_bins=num_bins)))
                rows_of[s.key, point.name] = rows
        return cls({s.key: s for s in sweeps}, measured, rows_of)

    def ran(self, key: str) -> bool:
        return key in self.sweeps

    def settings(self, key: str) -> list[tuple[dict[str, float], Measured]]:
        return self.measured.get(key, [])


# ---------------------------------------------------------------------------------------------
# Figures.


def _scale_of(s: StudySweep) -> str:
    return s.config.name.rsplit("_", 1)[-1] if s.config.name != s.full.name else "full"


def draw_figures(data: StudyData, out: Path, chosen: Sequence[str]) -> dict[str, list[str]]:
    """The figures of each claim in ``chosen``, drawn into ``out/figures``; paths relative to
    ``out``. Titles name the network, its width and the scale."""
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    drawn: dict[str, list[Path]] = {c: [] for c in chosen}
    studies = {}
    for key in data.sweeps:
        try:
            studies[key] = report.load_study(str(out / key))
        except report.ReportError as e:
            log.info("%s: %s", key, e)

    def scale(key: str) -> str:
        return f"{_scale_of(data.sweeps[key])} scale"

    p300 = data.rows.get(("mnist_widths", "width=300"))
    if "sdd" in drawn and p300:
        drawn["sdd"] += run_plots.sdd_curve(p300, figures, best=analysis.best_level(p300),
                                        name="sdd_mnist_p300",
                                        title=f"MNIST two-layer FCN 784-300-10, "
                                              f"{scale('mnist_widths')}")
    if "widths" in drawn:
        for key, network in (("mnist_widths", "two-layer"), ("mnist3_widths", "three-layer")):
            if key in studies:
                drawn["widths"] += study_plots.study_double_descent(
                    studies[key].records, figures, name=f"double_descent_{key}",
                    title=f"MNIST {network} FCN, every width, {scale(key)}")
        series = {n: studies[k].records for k, n in (("mnist_widths", "two-layer"),
                                                     ("mnist3_widths", "three-layer"))
                  if k in studies and any(r.effective_parameters is not None
                                          for r in studies[k].records)}
        if series:
            drawn["widths"] += study_plots.effective_parameters(
                series, figures, against="weights", name="effective_parameters_mnist",
                title=f"MNIST FCNs, {scale(next(k for k in studies if k.startswith('mnist')))}")
    mixtures = {t: studies[k].records for k, t in (("mixture_nu", "linear"),
                                                   ("mixture_xor_nu", "XOR"))
                if k in studies and any(r.effective_parameters is not None
                                        for r in studies[k].records)}
    if "mixtures" in drawn and mixtures:
        key = "mixture_nu" if "mixture_nu" in studies else "mixture_xor_nu"
        drawn["mixtures"] += study_plots.effective_parameters(
            mixtures, figures, against="nu", name="effective_parameters_nu",
            title=f"Gaussian mixtures, two-layer FCN (widths as configured), {scale(key)}")
    if "uncertainty" in drawn:
        for key, task in (("mixture_nu", "linear"), ("mixture_xor_nu", "XOR")):
            if key in studies:
                drawn["uncertainty"] += study_plots.full_vs_best(
                    studies[key].records, figures, name=f"true_distance_{key}",
                    metrics={"largest |p - p*|": "true_abs_error_max",
                             "mean |p - p*|": "true_abs_error", "KL(p* || p)": "true_kl"},
                    title=f"{task} mixture, two-layer FCN, {scale(key)}")
    if "calibration" in drawn:
        for key, width, name in (("mnist_widths", 300, "MNIST two-layer FCN 784-300-10"),
                                 ("cifar10", 80, "CIFAR-10 ResNet-20, W=80")):
            rows = data.rows.get((key, f"width={width}"))
            if rows:
                bins = studies[key].num_bins if key in studies else 15
                drawn["calibration"] += run_plots.ece_curve(
                    rows, figures, num_bins=bins, best=analysis.best_level(rows),
                    name=f"ece_{key}", title=f"{name}, {scale(key)}")
    return {c: [f"{figures.name}/{p.name}" for p in paths if p.suffix == ".png"]
            for c, paths in drawn.items()}


def claim_tables(sweeps: Sequence[StudySweep], out: Path, chosen: Sequence[str],
                 paper: Mapping | None = None) -> tuple[list[Table], dict[str, list[str]]]:
    """The tables of the claims ``chosen`` from the sweeps found under ``out`` (read only),
    and their figures (drawn into ``out/figures``)."""
    data = StudyData.load(sweeps, out)
    return claims.tables(data, chosen, paper), draw_figures(data, out, chosen)


def reduction(s: StudySweep) -> str:
    """The results-determining fields in which sweep ``s`` differs from the paper's, as
    ``field full -> this`` (empty at the full scale): the cuts a reader sees above a table."""
    ours, full = config_lib.identity(s.config), config_lib.identity(s.full)
    keys = sorted(k for k in set(ours) | set(full) if ours.get(k) != full.get(k) and k != "name")
    return "; ".join(f"{k} {full.get(k)!r} -> {ours.get(k)!r}" for k in keys)


# ---------------------------------------------------------------------------------------------
# The report.

SMOKE_NOTE = ("**The smoke scale checks the pipeline, not the science**: its runs are seconds "
              "long, and no verdict below says anything about the paper.")
WINDOWS_NOTE = (
    f"Windows: a best pruned count matches within a factor {v.COUNT_FACTOR:.4g} (two of the "
    f"study's 20% levels); an error, ECE or probability within the larger of a floor and two "
    f"standard errors (std/sqrt(n)) of ours, never wider than a cap (error "
    f"{v.WINDOWS['error'].floor}-{v.WINDOWS['error'].cap}, ECE {v.WINDOWS['ece'].floor}-"
    f"{v.WINDOWS['ece'].cap}, probability {v.WINDOWS['probability'].floor}-"
    f"{v.WINDOWS['probability'].cap}); a direction from the per-replicate differences (the "
    f"replicates share data and labels), beyond two standard errors and {v.DIRECTION_FLOOR}; a "
    f"ratio of two counts within the pruning grid's step; a spread no larger than the paper's "
    f"times {v.COUNT_FACTOR:.4g}. Only `matches` and `differs` are counted; `check` rows test "
    f"our own plumbing, `reference only` rows compare a number that depends on a setting we "
    f"changed, and extensions (our measures beyond the paper's) are judged but not counted.")
COLUMNS = ("setting", "quantity", "paper", "ours", "n", "verdict", "source")
CSV_COLUMNS = ("setting", "quantity", "paper", "mean", "std", "n", "verdict", "detail",
               "counted", "extension", "source")


def shown_rows(table: Table) -> list[dict[str, Any]]:
    """The rows of ``table`` as the report shows them: rows of a sweep not run at this scale
    as one line per sweep."""
    out: list[dict[str, Any]] = []
    for row in table.rows:
        cells = {"setting": row.setting, "quantity": row.quantity, "paper": row.paper,
                 "ours": row.ours, "n": row.n, "verdict": str(row.verdict),
                 "source": row.source, "word": row.verdict.word}
        if row.extension:
            cells["quantity"] += " (extension)"
        last = out[-1] if out else None
        if (row.verdict.word == v.NOT_RUN and last is not None and last["word"] == v.NOT_RUN
                and last.get("sweep") == row.sweep):
            last["settings"].append(row.setting)
            last["count"] += 1
            settings = list(dict.fromkeys(last["settings"]))
            last["setting"] = f"{row.sweep}: {', '.join(settings)}"
            last["quantity"] = f"{last['count']} rows"
            last["paper"] = last["source"] = ""
            continue
        out.append({**cells, "sweep": row.sweep, "settings": [row.setting], "count": 1})
    return out


def csv_rows(table: Table) -> list[dict[str, Any]]:
    """Every row of ``table`` as numbers (the prose stays in REPORT.md)."""
    return [{"setting": r.setting, "quantity": r.quantity, "paper": r.paper_value,
             "mean": r.mean, "std": r.std, "n": r.n, "verdict": r.verdict.word,
             "detail": r.verdict.detail, "counted": r.counted, "extension": r.extension,
             "source": r.source} for r in table.rows]


SUMMARY_COLUMNS = ("claim", *v.WORDS, "not counted", "ours")


def summary_rows(tables: Sequence[Table]) -> list[dict[str, Any]]:
    """The headline table: per claim, its rows of each verdict word and its headline."""
    return [{"claim": t.title, **t.counts(), "ours": t.headline or "–"} for t in tables]


def _cell(value: Any) -> str:
    return "–" if value is None or value == "" else str(value)


def _markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(r[c]).replace("|", r"\|") for c in columns) + " |"
              for r in rows]
    return "\n".join(lines)


def _intro(scale: str, progress: str) -> list[str]:
    return [*([SMOKE_NOTE] if scale == "smoke" else []),
            "Arora, Irto, Goldt, Sanguinetti, \"Quantifying lottery tickets under label noise: "
            "accuracy, calibration, and complexity\", UAI 2023. Paper values: "
            "`imp_jax/study/paper_values.json` (each with its source); ours: this directory's "
            "sweeps, mean ± std over replicates (sample std).", progress]


def markdown(tables: Sequence[Table], figures: Mapping[str, Sequence[str]], *, scale: str,
             progress: str, reduced: Mapping[str, str] | None = None) -> str:
    """``REPORT.md``: the summary, then each claim's table, the scale's cuts and figures."""
    parts = [f"# Reproducing the study at the `{scale}` scale", *_intro(scale, progress),
             "## Summary", _markdown_table(summary_rows(tables), SUMMARY_COLUMNS), WINDOWS_NOTE]
    for t in tables:
        parts.append(f"## {t.title}")
        cut = [f"- {k}: {c}" for k, c in (reduced or {}).items()
               if c and any(r.sweep == k for r in t.rows)]
        if cut:
            parts.append("This scale's settings (field: the paper's -> ours):\n" + "\n".join(cut))
        parts.append(_markdown_table(shown_rows(t), COLUMNS))
        parts += [f"![{Path(f).stem}]({f})" for f in figures.get(t.claim, [])]
    return "\n\n".join(parts) + "\n"


_COLOURS = {v.MATCHES: "#d7f0d2", v.DIFFERS: "#f6d2d0", v.UNDETERMINED: "#f5ecc8",
            v.NOT_RUN: "#eeeeee", v.CHECK: "#dde7f5", v.REFERENCE: "#e8e0f2"}


def _html_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)

    def cell(r: Mapping[str, Any], c: str) -> str:
        style = (f' style="background:{_COLOURS[r["word"]]}"'
                 if c == "verdict" and r.get("word") in _COLOURS else "")
        return f"<td{style}>{html.escape(_cell(r[c]))}</td>"

    body = "".join("<tr>" + "".join(cell(r, c) for c in columns) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def html_page(tables: Sequence[Table], figures: Mapping[str, Sequence[str]], *, scale: str,
              progress: str, reduced: Mapping[str, str] | None = None) -> str:
    """``report.html``: the content of :func:`markdown`, its verdicts coloured."""
    intro = "".join(f"<p>{html.escape(p.replace('**', '').replace('`', ''))}</p>"
                    for p in _intro(scale, progress))
    parts = [f"<h1>Reproducing the study at the {html.escape(scale)} scale</h1>", intro,
             "<h2>Summary</h2>", _html_table(summary_rows(tables), SUMMARY_COLUMNS),
             f"<p>{html.escape(WINDOWS_NOTE.replace('`', ''))}</p>"]
    for t in tables:
        parts.append(f"<h2>{html.escape(t.title)}</h2>")
        cut = [f"{k}: {c}" for k, c in (reduced or {}).items()
               if c and any(r.sweep == k for r in t.rows)]
        if cut:
            parts.append("<p>This scale's settings (the paper's -> ours):</p><ul>"
                         + "".join(f"<li>{html.escape(x)}</li>" for x in cut) + "</ul>")
        parts.append(_html_table(shown_rows(t), COLUMNS))
        parts += [f'<p><img src="{html.escape(f)}" width="600"></p>'
                  for f in figures.get(t.claim, [])]
    style = ("body{font-family:sans-serif;max-width:80em;margin:auto}table{border-collapse:"
             "collapse}td,th{border:1px solid #ccc;padding:2px 6px;font-size:90%}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>imp_jax: reproducing the "
            f"study ({html.escape(scale)})</title><style>{style}</style></head><body>"
            + "".join(parts) + "</body></html>\n")


def write_report(tables: Sequence[Table], figures: Mapping[str, Sequence[str]], out: Path, *,
                 scale: str, progress: str, reduced: Mapping[str, str] | None = None) -> Path:
    """Writes ``REPORT.md``, ``report.html``, ``<claim>.csv`` per table and ``summary.csv``
    into ``out``; returns the path of ``REPORT.md``."""
    for t in tables:
        report.write_csv(csv_rows(t), out / f"{t.claim}.csv", list(CSV_COLUMNS), {})
    report.write_csv(summary_rows(tables), out / "summary.csv", list(SUMMARY_COLUMNS), {})
    (out / "report.html").write_text(html_page(tables, figures, scale=scale, progress=progress,
                                               reduced=reduced))
    path = out / "REPORT.md"
    path.write_text(markdown(tables, figures, scale=scale, progress=progress, reduced=reduced))
    return path


def all_finished(sweeps: Sequence[StudySweep], out: Path) -> bool:
    """Whether every point of the sweeps under ``out`` is finished."""
    done, total = _points_done(sweeps, out)
    return done == total


def progress_line(sweeps: Sequence[StudySweep], out: Path) -> str:
    """Points finished over the whole study, as the report states it."""
    done, total = _points_done(sweeps, out)
    return f"Progress: {done}/{total} points of this scale's sweeps finished."
