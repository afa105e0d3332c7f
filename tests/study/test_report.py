"""`python -m experiments.report` on a tiny run of `python -m experiments.run`."""

import csv
import json
import os
import shutil
import subprocess
import sys

import pytest

from imp_jax.run.rundir import RunDir
from imp_jax.study import report
from tests.helpers import ROOT, files_outside_plots

FIGURES = ("sdd_curve", "ece_curve", "calibration", "mixture_profile", "mixture_vs_true",
           "mixture_error_map")
COLUMNS = ["run", "model", "level", "weights", "compact shape", "test error", "ECE (clean)",
           "ECE (noisy)", "NLL", "overconfidence", r"\|p - p_true\|"]


def python(module, *args):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def figure_files(workdir):
    return {p.name: p.stat().st_size for p in (workdir / "plots").iterdir()}


@pytest.fixture(scope="module")
def workdir(tiny_finished_run, tmp_path_factory):
    """A copy of the session's finished tiny mixture run, whose figures these tests redraw."""
    workdir = tmp_path_factory.mktemp("report") / "run"
    shutil.copytree(tiny_finished_run, workdir)
    return workdir


def test_run_writes_the_figures(workdir):
    files = figure_files(workdir)
    assert set(files) == {f"{n}.{ext}" for n in FIGURES for ext in ("png", "pdf")}
    assert all(size > 1000 for size in files.values())


def test_report_table_csv_and_figures(workdir, tmp_path):
    shutil.rmtree(workdir / "plots", ignore_errors=True)
    csv_path = tmp_path / "out" / "table.csv"
    before = files_outside_plots(workdir)
    out = python("experiments.report", workdir, f"--csv={csv_path}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert files_outside_plots(workdir) == before  # the figures under plots/ and the CSV only
    assert out.stdout.startswith(f"### {report.RUNS_TITLE}\n") and report.RUNS_LEGEND in out.stdout
    lines = [line for line in out.stdout.splitlines() if line.startswith("|")]
    assert [c.strip() for c in lines[0].strip("|").split(" | ")] == COLUMNS
    assert lines[1] == "|" + "---|" * len(COLUMNS)
    summary = json.loads((workdir / "summary.json").read_text())
    body = [[c.strip() for c in line[1:-1].split("|")] for line in lines[2:]]
    # A run this short may not have passed its minimum: then the best pruned row says so.
    best = summary["best_level"]
    name = "best pruned" if best is not None else "best pruned (minimum not yet reached)"
    assert [(r[0], r[1], r[2]) for r in body] == [
        (str(workdir), "dense", "0"), (str(workdir), name, "–" if best is None else str(best))]
    assert body[1][3] == ("–" if best is None else str(summary["effective_parameters"]))
    # The mixture network (D=10, 8 hidden units) compacted: dense, it uses every unit.
    assert body[0][4] == "10-8-2"
    assert all(" ± " in cell for cell in body[0][5:])
    assert all((" ± " in cell) == (best is not None) for cell in body[1][5:])

    with open(csv_path) as f:
        table = list(csv.DictReader(f))
    assert [r["model"] for r in table] == ["dense", name]
    assert list(table[0])[:7] == ["run", "model", "level", "weights", "compact_shape",
                                  "test_error", "test_error_std"]
    if best is None:
        assert table[1]["test_error"] == ""
    else:
        assert float(table[1]["test_error"]) == pytest.approx(summary["best_test_error"])
    assert float(table[0]["true_abs_error"]) == pytest.approx(
        summary["models"]["dense"]["metrics"]["true_abs_error"]["mean"])
    assert all(size > 1000 for size in figure_files(workdir).values())
    assert len(figure_files(workdir)) == 2 * len(FIGURES)


def test_report_without_csv_writes_nothing(workdir):
    shutil.rmtree(workdir / "plots", ignore_errors=True)
    before = files_outside_plots(workdir)
    out = python("experiments.report", workdir, "--noplots")
    assert out.returncode == 0, out.stderr[-3000:]
    assert files_outside_plots(workdir) == before and not (workdir / "plots").exists()
    assert len([line for line in out.stdout.splitlines() if line.startswith("|")]) == 4


def test_report_rejects_paths_that_are_not_runs(workdir, tmp_path):
    out = python("experiments.report", workdir, tmp_path, "--noplots")
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip().splitlines()[-1] == (
        f"error: {tmp_path} is not an imp_jax run directory (no config.json)")


def test_load_rows_errors(workdir, tmp_path):
    with pytest.raises(report.ReportError, match="nope does not exist"):
        report.load_rows(str(tmp_path / "nope"))
    (tmp_path / "file").write_text("")
    with pytest.raises(report.ReportError, match="file is not a directory"):
        report.load_rows(str(tmp_path / "file"))
    with pytest.raises(report.ReportError, match=r"never: not started yet \(no sweep.json\)$"):
        report.load_study(str(tmp_path / "never"))
    shutil.copy(workdir / "config.json", tmp_path)
    with pytest.raises(report.ReportError, match="has no finished level yet"):
        report.load_rows(str(tmp_path))
    rows, num_bins = report.load_rows(str(workdir))
    assert num_bins == 15 and len(rows) == 4 * 2


def test_figures_are_up_to_date_only_when_all_are_there_and_newer(tiny_finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_finished_run, run)
    config = RunDir(run).stored_config()
    assert sorted(report.expected_figures(config)) == sorted(figure_files(tiny_finished_run))
    assert report.figures_up_to_date(str(run))
    for name in ("ece_curve.pdf", "mixture_profile.png", "mixture_error_map.pdf"):
        (run / "plots" / name).unlink()  # a drawing killed half-way
    assert not report.figures_up_to_date(str(run))
    shutil.copytree(tiny_finished_run / "plots", run / "plots", dirs_exist_ok=True)
    assert report.figures_up_to_date(str(run))
    later = (run / "plots" / "sdd_curve.png").stat().st_mtime + 1
    os.utime(run / "metrics.jsonl", (later, later))  # a row written after the figures
    assert not report.figures_up_to_date(str(run))
