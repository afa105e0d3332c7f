"""Reproducing the study: its sweeps run (or found finished), and each of its claims a table of
the paper's published values beside ours, with a verdict per row.

The sweeps of a scale (``configs/reproduce.py``) are ordinary sweep directories under the output
directory, run by :func:`imp_jax.sweep.run_sweep` or as cluster jobs (:mod:`imp_jax.cluster`),
so finished points are never trained again and interrupted ones resume. :func:`claim_tables`
reads them only; :func:`write_report` writes ``REPORT.md``, ``report.html``, one CSV per table
and the figures, all inside the output directory.

A row's verdict is "matches" within the tolerance of its kind (:data:`TOLERANCES`), "differs"
with by how much and in which direction, or "not run at this scale". The paper's values are data
(``paper_values.json``, each with its source) and appear only in the "paper" column.
"""

from __future__ import annotations

import dataclasses
import html
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_collections

from imp_jax import analysis, cluster, plots, report, study_plots
from imp_jax import config as config_lib
from imp_jax import sweep as sweep_lib

log = logging.getLogger(__name__)

PAPER_FILE = Path(__file__).with_name("paper_values.json")
CLAIMS = {
    "sdd": "1. Sparse double descent on MNIST (two-layer FCN, P=300, 20% label noise)",
    "widths": "2. Best pruned sizes are comparable across widths (MNIST, 20% label noise)",
    "mixtures": "3. The effective number of parameters reflects task difficulty (mixtures)",
    "uncertainty": "4. Pruned models capture the true p(y|x) better (mixtures)",
    "calibration": "5. Calibration on real data: ECE of the full and the best pruned network",
}
# Weights: within two of the study's 20% pruning levels (1.25^2) of the paper's count.
COUNT_FACTOR = 1.25 ** 2
TOLERANCES = {
    "count": f"a weight count matches within a factor {COUNT_FACTOR:.4g} of the paper's (two of "
             f"the study's 20% pruning levels); a full network's count must be equal",
    "error": "a test error matches within 0.02 or two replicate std, whichever is larger",
    "ece": "an ECE matches within 0.03 or two replicate std, whichever is larger",
    "range": f"a count matches a published range when within it, widened by the factor "
             f"{COUNT_FACTOR:.4g}",
    "ratio": f"a ratio matches within a factor {COUNT_FACTOR:.4g} of the paper's",
    "direction": f"'lower' matches when the mean difference exceeds the larger replicate std "
                 f"and {analysis.TOLERANCE_FLOOR}",
}
_ABSOLUTE = {"error": 0.02, "ece": 0.03}
NOT_RUN = "not run at this scale"
VERDICTS = ("matches", "differs", NOT_RUN)
COLUMNS = ("setting", "quantity", "paper", "ours", "replicates", "verdict", "source")
Stat = Mapping[str, float | None]  # {"mean", "std"} over replicates


@dataclasses.dataclass(frozen=True)
class StudySweep:
    """One sweep of the study at some scale: its directory name under the output directory,
    its config, the same sweep at the paper's settings, and the claims it feeds."""

    key: str
    config: ml_collections.ConfigDict
    full: ml_collections.ConfigDict
    claims: tuple[str, ...]


@dataclasses.dataclass
class Table:
    """One claim's section of the report: its rows (:data:`COLUMNS`), what the scale cut in
    the sweeps it reads, its figures (relative to the output directory) and the headline."""

    claim: str
    rows: list[dict[str, Any]]
    reduced: list[str]
    figures: list[str]
    headline: str = ""

    @property
    def title(self) -> str:
        return CLAIMS[self.claim]

    def counts(self) -> dict[str, int]:
        """How many rows have each verdict."""
        return {v: sum(r["verdict"].startswith(v) for r in self.rows) for v in VERDICTS}


def paper_values(path: Path = PAPER_FILE) -> dict[tuple[str, str, str], dict[str, Any]]:
    """The published values, by ``(claim, setting, quantity)``: each ``{"value", "kind",
    "source"}`` (``kind`` one of :data:`TOLERANCES`)."""
    entries = json.loads(path.read_text())["values"]
    return {(e["claim"], e["setting"], e["quantity"]): e for e in entries}


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
    ``workers`` jobs of ``launcher`` (see :func:`imp_jax.cluster.launch`); logs the progress
    over the whole study. Returns whether every point is now finished (SLURM jobs are
    submitted and left running).

    Raises:
      ConfigError, RunDirError: a bad sweep, or a directory holding another one, before any
        point runs; and what :func:`imp_jax.sweep.run_sweep` raises.
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
    each job passing from sweep to sweep: see :class:`imp_jax.cluster.SweepWorker`); waits for
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
# Verdicts.


def fmt_count(value: float | None) -> str:
    """A weight count as the paper prints it (``238 200``)."""
    return "–" if value is None else f"{round(value):,}".replace(",", " ")


def fmt_stat(stat: Stat | None, digits: int = 3) -> str:
    """``mean ± std`` (the std over replicates)."""
    if stat is None or stat.get("mean") is None:
        return "–"
    return f"{stat['mean']:.{digits}f} ± {stat.get('std') or 0.0:.{digits}f}"


def fmt_paper(entry: Mapping[str, Any]) -> str:
    """A published value as the report prints it."""
    value, kind = entry["value"], entry["kind"]
    if kind == "count":
        return fmt_count(value)
    if kind == "range":
        return f"{fmt_count(value[0])}-{fmt_count(value[1])}"
    if kind == "ratio":
        return f"about {value:g}x"
    if kind == "direction":
        return str(value)
    return f"{value:.3f}"


def verdict_count(paper: float, ours: float | None, *, exact: bool = False) -> str:
    """A weight count against the paper's (:data:`COUNT_FACTOR`, or equality)."""
    if ours is None:
        return "differs: no best pruned model (the sparse minimum is not reached)"
    ratio = ours / paper
    if ratio == 1 or (not exact and 1 / COUNT_FACTOR <= ratio <= COUNT_FACTOR):
        return "matches"
    return f"differs: ours {ratio:.2f}x the paper's ({'more' if ratio > 1 else 'fewer'} weights)"


def verdict_value(paper: float, ours: Stat | None, kind: str) -> str:
    """An error or ECE (mean ± std over replicates) against the paper's."""
    if ours is None or ours.get("mean") is None:
        return "differs: no value (the sparse minimum is not reached)"
    difference = ours["mean"] - paper
    if abs(difference) <= max(_ABSOLUTE[kind], 2 * (ours.get("std") or 0.0)):
        return "matches"
    return f"differs: ours {abs(difference):.3f} {'higher' if difference > 0 else 'lower'}"


def verdict_range(paper: Sequence[float], ours: float | None) -> str:
    """A count against a published range (widened by :data:`COUNT_FACTOR`)."""
    if ours is None:
        return "differs: no best pruned model (the sparse minimum is not reached)"
    lo, hi = paper
    if lo / COUNT_FACTOR <= ours <= hi * COUNT_FACTOR:
        return "matches"
    return (f"differs: ours {ours / hi:.2f}x the range's top" if ours > hi else
            f"differs: ours {lo / ours:.2f}x below the range's bottom")


def verdict_ratio(paper: float, ours: float | None) -> str:
    """A ratio against the paper's (within :data:`COUNT_FACTOR`)."""
    if ours is None:
        return "differs: no ratio (a sparse minimum is not reached)"
    if 1 / COUNT_FACTOR <= ours / paper <= COUNT_FACTOR:
        return "matches"
    return f"differs: ours {ours:.2f}x, {'above' if ours > paper else 'below'} the paper's"


def verdict_lower(full: Stat | None, best: Stat | None, what: str = "best pruned") -> str:
    """Whether ``best``'s mean is lower than ``full``'s by more than the tolerance."""
    if full is None or best is None or full.get("mean") is None or best.get("mean") is None:
        return "differs: no best pruned model (the sparse minimum is not reached)"
    tolerance = max(analysis.TOLERANCE_FLOOR, full.get("std") or 0.0, best.get("std") or 0.0)
    difference = full["mean"] - best["mean"]
    if difference > tolerance:
        return "matches"
    if difference < -tolerance:
        return f"differs: {what} {-difference:.3g} higher, not lower"
    return f"differs: no clear difference ({difference:+.3g}, tolerance {tolerance:.3g})"


# ---------------------------------------------------------------------------------------------
# The claims' tables.


def _row(setting: str, quantity: str, paper: Mapping[str, Any] | None, ours: str,
         replicates: int | None, verdict: str) -> dict[str, Any]:
    return {"setting": setting, "quantity": quantity,
            "paper": fmt_paper(paper) if paper else "–", "ours": ours,
            "replicates": replicates, "verdict": verdict,
            "source": paper["source"] if paper else ""}


def _metric(record: Mapping[str, Any] | None, model: str, metric: str) -> Stat | None:
    if record is None or model not in record["models"]:
        return None
    return record["models"][model]["metrics"].get(metric)


def _best_weights(record: Mapping[str, Any]) -> str:
    spread = record["effective_parameters_replicates"]
    per = "" if spread["mean"] is None else (
        f" (per replicate {fmt_count(spread['mean'])} ± {fmt_count(spread['std'] or 0.0)})")
    if record["effective_parameters"] is None:
        curve = record["curve"]
        i = curve["level"].index(record["lowest_error_level"])
        last = " (the last)" if i == len(curve["level"]) - 1 else ""
        return (f"not reached; lowest error so far at {fmt_count(curve['remaining_weights'][i])}"
                f" (level {curve['level'][i]}{last})" + per)
    return fmt_count(record["effective_parameters"]) + per


@dataclasses.dataclass
class _Studies:
    """The loaded sweeps of a report: records by sweep key and setting, the sweeps' configs."""

    studies: dict[str, report.Study]
    sweeps: dict[str, StudySweep]

    def records(self, key: str) -> list[dict[str, Any]]:
        return self.studies[key].records if key in self.studies else []

    def record(self, key: str, **values: float) -> dict[str, Any] | None:
        return next((r for r in self.records(key)
                     if all(r["values"].get(k) == v for k, v in values.items())), None)

    def reduced(self, *keys: str) -> list[str]:
        """What the scale changed from the paper's settings, per sweep that ran."""
        out = []
        for key in keys:
            if key in self.sweeps and (cut := reduction(self.sweeps[key])):
                out.append(f"{key}: {cut}")
        return out


def reduction(s: StudySweep) -> str:
    """The results-determining fields in which ``s`` differs from the paper's settings, as
    ``field full -> this`` (empty at the full scale)."""
    ours, full = config_lib.identity(s.config), config_lib.identity(s.full)
    keys = sorted(k for k in set(ours) | set(full)
                  if ours.get(k) != full.get(k) and k != "name")
    return "; ".join(f"{k} {full.get(k)!r} -> {ours.get(k)!r}" for k in keys)


def _errors_rows(setting: str, record: Mapping[str, Any] | None,
                 paper: Mapping[tuple[str, str, str], Mapping[str, Any]]) -> list[dict]:
    """The rows of one network of the study's table: full and best pruned weights, test error
    full and pruned (those the paper gives a value for, and the weights always)."""
    quantities = ("full weights", "best pruned weights", "test error (full)",
                  "test error (pruned)")
    rows = []
    for quantity in quantities:
        entry = paper.get(("widths", setting, quantity))
        if entry is None and "error" in quantity:
            continue
        if record is None:
            rows.append(_row(setting, quantity, entry, "–", None, NOT_RUN))
            continue
        n = record["replicates"]
        if quantity == "full weights":
            ours = fmt_count(record["total_weights"])
            verdict = (verdict_count(entry["value"], record["total_weights"], exact=True)
                       if entry else "")
        elif quantity == "best pruned weights":
            ours = _best_weights(record)
            verdict = verdict_count(entry["value"], record["effective_parameters"]) if entry \
                else ""
        else:
            stat = _metric(record, "dense" if "full" in quantity else "best", "test_error")
            ours = fmt_stat(stat)
            verdict = verdict_value(entry["value"], stat, "error")
        rows.append(_row(setting, quantity, entry, ours, n, verdict or "no published value"))
    return rows


def _network(key: str) -> str:
    return "three-layer" if key.startswith("mnist3") else "two-layer"


def _widths_in_paper(paper: Mapping[tuple[str, str, str], Any], network: str) -> list[int]:
    return sorted({int(s.split("P=")[1]) for c, s, _ in paper
                   if c == "widths" and s.startswith(f"{network} P=")})


def sdd_table(data: _Studies, paper: Mapping, figures: Path) -> Table:
    """Claim 1: the full and best pruned P=300 two-layer network, and its error's fall."""
    record = data.record("mnist_widths", width=300)
    rows = _errors_rows("two-layer P=300", record, paper)
    entry = paper.get(("sdd", "two-layer P=300", "test error fall, full to best pruned"))
    full, best = _metric(record, "dense", "test_error"), _metric(record, "best", "test_error")
    if record is None:
        rows.append(_row("two-layer P=300", "test error fall, full to best pruned", entry, "–",
                         None, NOT_RUN))
    else:
        fall = (None if best is None else {"mean": full["mean"] - best["mean"], "std": None})
        rows.append(_row("two-layer P=300", "test error fall, full to best pruned", entry,
                         fmt_stat(fall), record["replicates"], verdict_lower(full, best)))
    drawn = []
    if record is not None:
        run_rows, _ = report.load_rows(str(data.studies["mnist_widths"].path / "width=300"))
        drawn = plots.sdd_curve(run_rows, figures, best=record["best_level"],
                                name="sdd_mnist_p300")
    headline = "" if record is None else (
        f"P=300: {fmt_count(record['total_weights'])} -> {_best_weights(record)} weights, "
        f"test error {fmt_stat(full)} -> {fmt_stat(best)}")
    return Table("sdd", rows, data.reduced("mnist_widths"), _relative(drawn, figures),
                 headline)


def widths_table(data: _Studies, paper: Mapping, figures: Path) -> Table:
    """Claim 2: every width of both MNIST networks in the study's table format, and the
    spread of the best pruned sizes across widths."""
    rows, drawn, sizes = [], [], {}
    for key in ("mnist_widths", "mnist3_widths"):
        network = _network(key)
        for width in _widths_in_paper(paper, network):
            record = data.record(key, width=width)
            rows += _errors_rows(f"{network} P={width}", record, paper)
            if record is not None and record["effective_parameters"] is not None:
                sizes.setdefault(network, []).append(record["effective_parameters"])
        entry = paper.get(("widths", network, "best pruned weights, largest / smallest"))
        spread = sizes.get(network, [])
        ratio = max(spread) / min(spread) if len(spread) > 1 else None
        rows.append(_row(network, "best pruned weights, largest / smallest", entry,
                         "–" if ratio is None else f"{ratio:.2f}x over {len(spread)} widths",
                         None, NOT_RUN if not data.records(key) else
                         "differs: fewer than two widths reached a best pruned model"
                         if ratio is None else
                         "matches" if ratio <= entry["value"] * COUNT_FACTOR else
                         f"differs: ours {ratio / entry['value']:.2f}x the paper's spread"))
        if data.records(key):
            drawn += study_plots.study_double_descent(data.records(key), figures,
                                                title=f"MNIST, {network} FCN",
                                                name=f"double_descent_{key}")
    series = {_network(k): data.records(k) for k in ("mnist_widths", "mnist3_widths")
              if any(r["effective_parameters"] is not None for r in data.records(k))}
    if series:
        drawn += study_plots.effective_parameters(series, figures, against="weights",
                                            name="effective_parameters_mnist")
    headline = "; ".join(f"{n}: best pruned {fmt_count(min(s))}-{fmt_count(max(s))} weights "
                         f"over {len(s)} widths" for n, s in sizes.items())
    return Table("widths", rows, data.reduced("mnist_widths", "mnist3_widths"),
                 _relative(drawn, figures), headline)


def mixtures_table(data: _Studies, paper: Mapping, figures: Path) -> Table:
    """Claim 3: the effective parameters of the linear and XOR mixtures against nu, and their
    ratio at equal nu."""
    rows, ratios = [], []
    tasks = (("mixture_nu", "linear"), ("mixture_xor_nu", "XOR"))
    for key, task in tasks:
        entry = paper.get(("mixtures", task, "effective parameters"))
        if not data.records(key):
            rows.append(_row(task, "effective parameters", entry, "–", None, NOT_RUN))
        for r in data.records(key):
            verdict = (verdict_range(entry["value"], r["effective_parameters"]) if entry
                       else "no published value")
            rows.append(_row(f"{task}, nu={r['values']['nu']:g}", "effective parameters", entry,
                             _best_weights(r), r["replicates"], verdict))
    entry = paper[("mixtures", "XOR / linear", "effective parameters ratio at equal nu")]
    for linear in data.records("mixture_nu"):
        xor = data.record("mixture_xor_nu", nu=linear["values"]["nu"])
        if xor is None:
            continue
        a, b = linear["effective_parameters"], xor["effective_parameters"]
        ratio = b / a if a and b else None
        ratios.append(ratio)
        rows.append(_row(f"nu={linear['values']['nu']:g}", "XOR / linear effective parameters",
                         entry, "–" if ratio is None else f"{ratio:.2f}x",
                         min(linear["replicates"], xor["replicates"]),
                         verdict_ratio(entry["value"], ratio)))
    if not ratios:
        rows.append(_row("equal nu", "XOR / linear effective parameters", entry, "–", None,
                         NOT_RUN))
    series = {task: data.records(key) for key, task in tasks
              if any(r["effective_parameters"] is not None for r in data.records(key))}
    drawn = (study_plots.effective_parameters(series, figures, against="nu",
                                        name="effective_parameters_nu") if series else [])
    found = [r for r in ratios if r is not None]
    headline = (f"XOR / linear at equal nu: {min(found):.2f}x-{max(found):.2f}x over "
                f"{len(found)} nu" if found else "")
    return Table("mixtures", rows, data.reduced("mixture_nu", "mixture_xor_nu"),
                 _relative(drawn, figures), headline)


TRUE_METRICS = (("|p - p*|", "true_abs_error"), ("KL(p* || p)", "true_kl"))


def uncertainty_table(data: _Studies, paper: Mapping, figures: Path) -> Table:
    """Claim 4: |p - p*| and KL(p* || p) of the full and the best pruned network, per nu."""
    rows, drawn, wins, settings = [], [], 0, 0
    for key, task in (("mixture_nu", "linear"), ("mixture_xor_nu", "XOR")):
        for title, metric in TRUE_METRICS:
            entry = paper.get(("uncertainty", task, title))
            if not data.records(key):
                rows.append(_row(task, title, entry, "–", None, NOT_RUN))
            for r in data.records(key):
                full, best = _metric(r, "dense", metric), _metric(r, "best", metric)
                verdict = verdict_lower(full, best)
                wins += verdict == "matches"
                settings += 1
                rows.append(_row(f"{task}, nu={r['values']['nu']:g}", title, entry,
                                 f"full {fmt_stat(full)}, best pruned {fmt_stat(best)}",
                                 r["replicates"], verdict))
        if data.records(key):
            drawn += study_plots.full_vs_best(data.records(key), figures,
                                        metrics=dict(TRUE_METRICS), title=f"{task} mixture",
                                        name=f"true_distance_{key}")
    headline = f"best pruned closer to p* in {wins} of {settings} (task, nu, measure)" \
        if settings else ""
    return Table("uncertainty", rows, data.reduced("mixture_nu", "mixture_xor_nu"),
                 _relative(drawn, figures), headline)


def calibration_table(data: _Studies, paper: Mapping, figures: Path) -> Table:
    """Claim 5: ECE against clean and noisy test labels, full vs best pruned (MNIST two-layer
    P=300; CIFAR-10's ResNet)."""
    rows, drawn, heads = [], [], []
    for key, width, setting in (("mnist_widths", 300, "MNIST two-layer P=300"),
                                ("cifar10", 16, "CIFAR-10 ResNet-20")):
        record = data.record(key, width=width)
        bins = data.studies[key].num_bins if key in data.studies else 15
        for labels, prefix in (("clean", "test"), ("noisy", "test_noisy")):
            stats = {m: _metric(record, m, f"{prefix}_ece_{bins}") for m in ("dense", "best")}
            for model, name in (("dense", "full"), ("best", "best pruned")):
                quantity = f"ECE, {labels} test labels ({name})"
                entry = paper.get(("calibration", setting, quantity))
                if record is None:
                    rows.append(_row(setting, quantity, entry, "–", None, NOT_RUN))
                    continue
                rows.append(_row(setting, quantity, entry, fmt_stat(stats[model]),
                                 record["replicates"],
                                 verdict_value(entry["value"], stats[model], "ece")))
            quantity = f"ECE, {labels} test labels: best pruned vs full"
            entry = paper.get(("calibration", setting, quantity))
            if record is None:
                rows.append(_row(setting, quantity, entry, "–", None, NOT_RUN))
                continue
            lower = verdict_lower(stats["dense"], stats["best"])
            higher = verdict_lower(stats["best"], stats["dense"], what="full")
            ours = ("best pruned lower" if lower == "matches" else "best pruned higher"
                    if higher == "matches" else "no clear difference")
            rows.append(_row(setting, quantity, entry, ours, record["replicates"],
                             lower if "lower" in entry["value"] else higher))
            if labels == "noisy":
                heads.append(f"{setting}: noisy-label ECE {fmt_stat(stats['dense'])} full -> "
                             f"{fmt_stat(stats['best'])} best pruned")
        if record is not None:
            run_rows, _ = report.load_rows(str(data.studies[key].path / f"width={width}"))
            drawn += plots.ece_curve(run_rows, figures, num_bins=bins,
                                     best=record["best_level"], name=f"ece_{key}")
    return Table("calibration", rows, data.reduced("mnist_widths", "cifar10"),
                 _relative(drawn, figures), "; ".join(heads))


TABLES: dict[str, Callable[[_Studies, Mapping, Path], Table]] = {
    "sdd": sdd_table, "widths": widths_table, "mixtures": mixtures_table,
    "uncertainty": uncertainty_table, "calibration": calibration_table}


def _relative(paths: Sequence[Path], figures: Path) -> list[str]:
    return [f"{figures.name}/{p.name}" for p in paths if p.suffix == ".png"]


def claim_tables(sweeps: Sequence[StudySweep], out: Path, claims: Sequence[str],
                 paper: Mapping | None = None) -> list[Table]:
    """The tables of ``claims`` from the sweeps found under ``out`` (read only; the figures
    are drawn into ``out/figures``). A sweep without a finished level gives "not run" rows."""
    studies = {}
    for s in sweeps:
        try:
            studies[s.key] = report.load_study(str(out / s.key))
        except report.ReportError as e:
            log.info("%s: %s", s.key, e)
    data = _Studies(studies, {s.key: s for s in sweeps})
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    paper = paper_values() if paper is None else paper
    return [TABLES[claim](data, paper, figures) for claim in claims]


# ---------------------------------------------------------------------------------------------
# The report.


def _cell(value: Any) -> str:
    return "–" if value is None else str(value)


def _markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(r[c]).replace("|", r"\|") for c in columns) + " |"
              for r in rows]
    return "\n".join(lines)


def summary_rows(tables: Sequence[Table]) -> list[dict[str, Any]]:
    """The headline table: per claim, the rows of each verdict and the headline numbers."""
    return [{"claim": t.title, **t.counts(), "ours": t.headline or "–"} for t in tables]


def markdown(tables: Sequence[Table], *, scale: str, progress: str) -> str:
    """``REPORT.md``: the headline table, then each claim's table, cuts and figures."""
    parts = [f"# Reproducing the study at the `{scale}` scale",
             "Arora, Irto, Goldt, Sanguinetti, \"Quantifying lottery tickets under label noise: "
             "accuracy, calibration, and complexity\", UAI 2023. Paper values: "
             "`imp_jax/paper_values.json` (each with its source); ours: this directory's sweeps, "
             "mean ± std over replicates (sample std).", progress,
             "## Summary", _markdown_table(summary_rows(tables), ["claim", *VERDICTS, "ours"]),
             "Tolerances: " + "; ".join(TOLERANCES.values()) + "."]
    for t in tables:
        parts.append(f"## {t.title}")
        if t.reduced:
            parts.append("**Reduced scale** (field: the paper's setting -> this scale's):\n"
                         + "\n".join(f"- {line}" for line in t.reduced))
        parts.append(_markdown_table(t.rows, COLUMNS))
        parts += [f"![{Path(f).stem}]({f})" for f in t.figures]
    return "\n\n".join(parts) + "\n"


def _html_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(r[c]))}</td>" for c in columns)
                   + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def html_page(tables: Sequence[Table], *, scale: str, progress: str) -> str:
    """``report.html``: the same content as :func:`markdown`, viewable in a browser."""
    parts = [f"<h1>Reproducing the study at the {html.escape(scale)} scale</h1>",
             f"<p>{html.escape(progress)}</p>", "<h2>Summary</h2>",
             _html_table(summary_rows(tables), ["claim", *VERDICTS, "ours"]),
             "<p>Tolerances: " + html.escape("; ".join(TOLERANCES.values())) + ".</p>"]
    for t in tables:
        parts.append(f"<h2>{html.escape(t.title)}</h2>")
        if t.reduced:
            parts.append("<p><b>Reduced scale</b> (the paper's setting -> this scale's):</p><ul>"
                         + "".join(f"<li>{html.escape(x)}</li>" for x in t.reduced) + "</ul>")
        parts.append(_html_table(t.rows, COLUMNS))
        parts += [f'<p><img src="{html.escape(f)}" width="600"></p>' for f in t.figures]
    style = ("body{font-family:sans-serif;max-width:75em;margin:auto}table{border-collapse:"
             "collapse}td,th{border:1px solid #ccc;padding:2px 6px;font-size:90%}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>imp_jax: reproducing the "
            f"study ({html.escape(scale)})</title><style>{style}</style></head><body>"
            + "".join(parts) + "</body></html>\n")


def write_report(tables: Sequence[Table], out: Path, *, scale: str, progress: str) -> Path:
    """Writes ``REPORT.md``, ``report.html`` and ``<claim>.csv`` per table (and
    ``summary.csv``) into ``out``; returns the path of ``REPORT.md``."""
    for t in tables:
        report.write_csv(t.rows, out / f"{t.claim}.csv", list(COLUMNS), {})
    report.write_csv(summary_rows(tables), out / "summary.csv",
                     ["claim", *VERDICTS, "ours"], {})
    (out / "report.html").write_text(html_page(tables, scale=scale, progress=progress))
    path = out / "REPORT.md"
    path.write_text(markdown(tables, scale=scale, progress=progress))
    return path


def progress_line(sweeps: Sequence[StudySweep], out: Path) -> str:
    """Points finished over the whole study, as the report states it."""
    done, total = _points_done(sweeps, out)
    return f"Progress: {done}/{total} points of this scale's sweeps finished."
