"""Sweeps: points and overrides, bad sweep values, an interrupted sweep resumes to the results of
an uninterrupted one, and the study report on a sweep directory."""

import csv
import json
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from configs import mixture_linear, mixture_linear_widths, mnist_widths
from imp_jax.core import analysis
from imp_jax.plots import study as study_plots
from imp_jax.run import config as config_lib
from imp_jax.run import driver
from imp_jax.run.config import ConfigError
from imp_jax.run.rundir import RunDirError
from imp_jax.study import report, sweep
from imp_jax.study import sweep as sweep_cli
from tests.helpers import (
    SDD,
    TINY_FLAGS,
    files_outside_plots,
    finished,
    make_rows,
    python,
    results,
    tiny_sweep,
    uninterrupted,
)

# -- points -----------------------------------------------------------------------------------


def test_points_product_names_and_configs():
    c = mnist_widths.get_config()
    c.sweep.width = (50, 1000)
    c.sweep.seed = (0, 3)
    c.model.hidden = (300, 100)
    points = sweep.points(c)
    assert [p.name for p in points] == ["width=50_seed=0", "width=50_seed=3",
                                        "width=1000_seed=0", "width=1000_seed=3"]
    assert points[3].values == {"width": 1000, "seed": 3}
    assert [tuple(p.config.model.hidden) for p in points] == [(50, 100)] * 2 + [(1000, 100)] * 2
    assert [p.config.seed for p in points] == [0, 3, 0, 3]
    assert [p.config.imp.rewind for p in points] == ["0", "0", "1ep", "1ep"]  # width>=1000
    assert all("sweep" not in p.config for p in points)
    assert "sweep" in c  # the sweep config itself is left alone


def test_nu_axis_and_overrides_in_order():
    c = mixture_linear_widths.get_config()
    c.sweep.width = (10, 100)
    c.sweep.nu = (0.5, 1)
    c.sweep.overrides = (("nu>0.7", "train.lr", 0.05), ("width == 100", "train.lr", 0.01),
                         ("width<=10", "model.hidden", [7]))
    points = {p.name: p for p in sweep.points(c)}
    assert list(points) == ["width=10_nu=0.5", "width=10_nu=1.0", "width=100_nu=0.5",
                            "width=100_nu=1.0"]
    assert points["width=10_nu=1.0"].values == {"width": 10, "nu": 1.0}
    assert {n: p.config.data.mixture_nu for n, p in points.items()} == {
        "width=10_nu=0.5": 0.5, "width=10_nu=1.0": 1.0, "width=100_nu=0.5": 0.5,
        "width=100_nu=1.0": 1.0}
    assert {n: p.config.train.lr for n, p in points.items()} == {
        "width=10_nu=0.5": 0.1, "width=10_nu=1.0": 0.05, "width=100_nu=0.5": 0.01,
        "width=100_nu=1.0": 0.01}  # the later override wins
    assert points["width=10_nu=0.5"].config.model.hidden == (7,)


def test_width_of_convolutional_networks():
    c = sweep.base_sweep_config()
    c.model.name = "resnet"
    c.sweep.width = (2, 5)
    c.sweep.overrides = (("width>=5", "train.momentum", 0.9),)
    points = sweep.points(c)
    assert [(p.config.model.width, p.config.train.momentum) for p in points] == [(2, 0.0),
                                                                                 (5, 0.9)]
    assert all(p.config.model.hidden == c.model.hidden for p in points)
    c.model.name = "densenet121"
    with pytest.raises(ConfigError, match=r"config\.sweep\.width: model\.name 'densenet121' has "
                                          r"no width"):
        sweep.points(c)


BAD = [
    ("width", (0, 5), r"config\.sweep\.width: must be a tuple of positive integers"),
    ("width", (5, 5), r"config\.sweep\.width: has repeated values"),
    ("seed", (-1,), r"config\.sweep\.seed: must be a tuple of integers >= 0"),
    ("nu", (0.5, -1.0), r"config\.sweep\.nu: must be a tuple of positive numbers"),
    ("overrides", (("depth>3", "train.lr", 0.1),),
     r"config\.sweep\.overrides\[0\]: the condition must look like 'width>=1000'"),
    ("overrides", (("width=>3", "train.lr", 0.1),), r"config\.sweep\.overrides\[0\]"),
    ("overrides", (("width>3", "train.rate", 0.1),),
     r"config\.sweep\.overrides\[0\]: 'train\.rate' is not a config field"),
    ("overrides", (("width>3", "train.lr"),), r"config\.sweep\.overrides\[0\]: must be a "),
    ("overrides", (("width>=1", "imp.levels", "many"),),
     r"config\.sweep\.overrides\[0\] at point width=5: cannot set imp\.levels to 'many'"),
    ("overrides", (("width>=8", "imp.rewind", "10 epochs"),),
     r"config\.imp\.rewind: must look like .* \(sweep point width=8\)"),
]


@pytest.mark.parametrize(("field", "value", "message"), BAD, ids=[f"{b[0]}={b[1]}" for b in BAD])
def test_bad_sweep_values_name_the_field(field, value, message):
    c = mixture_linear_widths.get_config("smoke")
    c.sweep.width = (5, 8)
    c.sweep[field] = value
    with pytest.raises(ConfigError, match=message):
        sweep.points(c)


def test_sweep_sections_that_cannot_run():
    c = mnist_widths.get_config("smoke")
    with pytest.raises(ConfigError, match=r"config\.sweep: this config is a sweep"):
        config_lib.validate(c)  # not an ordinary run
    with pytest.raises(ConfigError, match=r"config\.sweep\.nu: only mixture datasets"):
        c.sweep.nu = (0.5,)
        sweep.points(c)
    c.sweep.nu, c.sweep.width = (), ()
    with pytest.raises(ConfigError, match=r"config\.sweep: no axis is swept"):
        sweep.points(c)
    with pytest.raises(ConfigError, match=r"config\.sweep: missing"):
        sweep.points(mixture_linear.get_config())


def test_fingerprint_ignores_the_axes_values_only():
    a, b = tiny_sweep(), tiny_sweep()
    b.sweep.width = (4, 8, 16)
    assert sweep.fingerprint(a) == sweep.fingerprint(b)
    b.sweep.overrides = (("width>=8", "train.lr", 0.05),)
    assert sweep.fingerprint(a) != sweep.fingerprint(b)


# -- running ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return uninterrupted(tmp_path_factory, tiny_sweep())


def test_sweep_directory(reference):
    listing = json.loads((reference / "sweep.json").read_text())
    assert [(p["name"], p["dir"], p["values"]) for p in listing["points"]] == [
        ("width=4", "width=4", {"width": 4}), ("width=8", "width=8", {"width": 8})]
    for width in (4, 8):
        run_dir = reference / f"width={width}"
        assert json.loads((run_dir / "config.json").read_text())["model"]["hidden"] == [width]
        assert [(r["level"], r["replicate"]) for r in results(run_dir)] == [
            (lv, r) for lv in range(3) for r in range(2)]
        assert json.loads((run_dir / "summary.json").read_text())["finished"]


class KilledError(Exception):
    """Stands in for a kill at a chosen point."""


def test_interrupted_sweep_resumes_each_point_once(reference, tmp_path, monkeypatch):
    calls, kill = [], {"at": ""}
    original_run, original_start = driver.run, driver.Run._level_start

    def run_point(config, workdir):
        calls.append(Path(workdir).name)
        if kill["at"] == "between points" and Path(workdir).name == "width=8":
            raise KilledError
        return original_run(config, workdir)

    def level_start(self, level, previous, timer):
        if kill["at"] == "inside a point" and self.exp.config.model.hidden[0] == 8 and level == 2:
            raise KilledError
        return original_start(self, level, previous, timer)

    monkeypatch.setattr(driver, "run", run_point)
    monkeypatch.setattr(driver.Run, "_level_start", level_start)
    for where in ("between points", "inside a point"):
        kill["at"] = where
        with pytest.raises(KilledError):
            sweep_cli.run_sweep(tiny_sweep(), tmp_path)
    assert len(results(tmp_path / "width=8")) == 2 * 2  # killed after two of its levels
    first = (tmp_path / "width=4" / "metrics.jsonl").read_text()
    kill["at"] = ""
    calls.clear()
    summaries = sweep_cli.run_sweep(tiny_sweep(), tmp_path)
    assert calls == ["width=8"]  # the finished point is not even opened
    assert (tmp_path / "width=4" / "metrics.jsonl").read_text() == first
    for width, summary in zip((4, 8), summaries, strict=True):
        assert results(tmp_path / f"width={width}") == results(reference / f"width={width}")
        assert summary == json.loads((reference / f"width={width}" / "summary.json").read_text())


def test_sweep_refuses_another_sweeps_directory(reference, tmp_path):
    c = tiny_sweep()
    c.train.lr = 0.05
    with pytest.raises(RunDirError, match="holds another sweep"):
        sweep_cli.run_sweep(c, reference)
    (tmp_path / "stray.txt").write_text("")
    with pytest.raises(RunDirError, match=r"has no sweep\.json"):
        sweep_cli.run_sweep(tiny_sweep(), tmp_path)
    with pytest.raises(ConfigError, match=r"config\.sweep\.width"):
        c.sweep.width = (0,)
        sweep_cli.run_sweep(c, tmp_path / "new")
    assert not (tmp_path / "new").exists()


@pytest.mark.slow
def test_killed_command_line_sweep_resumes(reference, tmp_path):
    sweep_dir = tmp_path / "sweep"
    proc = python("experiments.sweep", *TINY_FLAGS, f"--sweep_dir={sweep_dir}",
                  output=subprocess.DEVNULL)  # an unread pipe could fill and block it
    second = sweep_dir / "width=8" / "metrics.jsonl"  # the second point has finished a level
    deadline = time.monotonic() + 300
    while proc.poll() is None and not second.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the sweep finished before it could be killed"
    assert not finished(sweep_dir / "width=8")
    proc = python("experiments.sweep", *TINY_FLAGS, f"--sweep_dir={sweep_dir}")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert "point 1/2 width=4: finished before" in err and "point 2/2 width=8: ran" in err
    for width in (4, 8):
        assert results(sweep_dir / f"width={width}") == results(reference / f"width={width}")
    # The study table under its title and above its legend, also in study.csv; the figures.
    assert out.startswith(f"### {report.STUDY_TITLE}\n\n") and report.STUDY_LEGEND in out
    table = [line for line in out.splitlines() if line.startswith("|")]
    assert table[0].startswith("| sweep | width | replicates | weights | test error (dense) |")
    assert [line.split(" | ")[1] for line in table[2:]] == ["4", "8"]
    assert (sweep_dir / "study.csv").read_text().count("\n") == 3
    figures = {p.name.split(".")[0] for p in (sweep_dir / "plots").iterdir()}
    assert figures in ({"double_descent"}, {"double_descent", "effective_parameters_vs_weights"})
    assert len(list((sweep_dir / "plots").iterdir())) == 2 * len(figures)


@pytest.mark.slow
def test_bad_command_line_sweep_stops_before_any_point(tmp_path):
    proc = python("experiments.sweep", *TINY_FLAGS, "--config.sweep.overrides="
                  "(('width>4','train.lr',-1.0),)", f"--sweep_dir={tmp_path / 'sweep'}")
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 2
    assert err.strip().splitlines()[-1] == (
        "error: config.train.lr: must be in (0.0, inf), got -1.0 (sweep point width=8)")
    assert not (tmp_path / "sweep").exists()


# -- the study report -------------------------------------------------------------------------


def test_report_on_a_sweep_directory(reference, tmp_path):
    before = files_outside_plots(reference)
    proc = python("experiments.report", reference, f"--csv={tmp_path / 'study.csv'}")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert files_outside_plots(reference) == before  # the figures under plots/ and the CSVs only
    lines = [line for line in out.splitlines() if line.startswith("|")]
    assert [c.strip() for c in lines[0].strip("|").split(" | ")] == [
        "sweep", "width", "replicates", "weights", "test error (dense)", "ECE (dense)",
        "best level", "effective parameters", "effective (per replicate)", "test error (best)",
        "ECE (best)", "SDD"]
    with open(tmp_path / "study.csv") as f:
        table = list(csv.DictReader(f))
    assert [(r["sweep"], r["width"], r["weights"]) for r in table] == [
        ("mixture_linear_widths_smoke", "4", str(10 * 4 + 4 * 2)),
        ("mixture_linear_widths_smoke", "8", str(10 * 8 + 8 * 2))]
    reached = []
    for row, width in zip(table, (4, 8), strict=True):
        summary = json.loads((reference / f"width={width}" / "summary.json").read_text())
        reached.append(summary["best_level"] is not None)
        assert row["effective_parameters"] == str(summary["effective_parameters"] or "")
        if summary["best_test_error"] is None:
            assert row["best_test_error"] == ""
        else:
            assert float(row["best_test_error"]) == pytest.approx(summary["best_test_error"])
        assert float(row["dense_ece_std"]) >= 0
    assert all(p.stat().st_size > 1000 for p in (reference / "plots").iterdir())
    # The effective number of parameters is drawn once some point has passed its minimum.
    assert len(list((reference / "plots").iterdir())) == (4 if any(reached) else 2)
    # The study's own table and the calibration comparison follow, each in a CSV of its own.
    with open(tmp_path / "study_paper.csv") as f:
        paper = list(csv.DictReader(f))
    assert [(r["width"], r["full_weights"]) for r in paper] == [("4", "48"), ("8", "96")]
    assert "| sweep | width | full weights | best pruned weights |" in out
    with open(tmp_path / "study_calibration.csv") as f:
        models = [r["model"] for r in csv.DictReader(f)]
    assert models[0].startswith("best small full (width=") and "full (width=8)" in models


def test_sweep_report_without_csv_writes_nothing(reference):
    before = files_outside_plots(reference)
    table = report.report_sweeps([str(reference)], draw=False, comparisons=True)
    titles = [line for line in table.splitlines() if line.startswith("### ")]
    assert len(titles) == 3 and titles[0] == f"### {report.STUDY_TITLE}"
    assert "\n| sweep | width |" in table
    assert files_outside_plots(reference) == before


def test_study_records_pool_seeds_and_figures(tmp_path):
    points = []
    for nu in (0.5, 1.0):
        for width, weights in ((10, 1000), (100, 10_000)):
            for seed in (0, 1):
                errors = [e * nu + 0.01 * seed for e in SDD]
                points.append(({"width": width, "nu": nu, "seed": seed},
                               make_rows([[e, e + 0.02] for e in errors], weights=weights)))
    records = analysis.study_records(points)
    assert [r.values for r in records] == [
        {"width": 10, "nu": 0.5}, {"width": 100, "nu": 0.5}, {"width": 10, "nu": 1.0},
        {"width": 100, "nu": 1.0}]
    first = records[0]
    assert first.runs == 2 and first.replicates == 4 and first.total_weights == 1000
    assert first.best_level == int(np.argmin(SDD))
    assert first.effective_parameters == round(1000 * 0.8 ** np.argmin(SDD))
    assert first.effective_parameters_replicates.std == 0.0
    paths = study_plots.study_double_descent(records, tmp_path)
    assert [p.name for p in paths] == ["double_descent.png", "double_descent.pdf"]
    series = {"linear": records, "xor": records[:2]}
    for against in ("weights", "nu"):
        paths = study_plots.effective_parameters(series, tmp_path, against=against)
        assert paths[0].stat().st_size > 1000


def test_paper_table_and_best_small_full():
    # Width 10 is narrow (pruning helps at once), width 100 wide (its full network errs least).
    narrow = [0.060, 0.050, 0.040, 0.031, 0.034, 0.090, 0.300]
    wide = [0.020, 0.024, 0.030, 0.026, 0.024, 0.025, 0.040, 0.200]
    points = [({"width": 10}, make_rows(narrow, weights=1000)),
              ({"width": 100}, make_rows(wide, weights=10_000))]
    records = analysis.study_records(points)
    small = analysis.best_small_full(records)
    assert [s["record"].values for s in small] == [{"width": 100}]
    study = report.Study(Path("."), "s", ["width"], records, 15)
    paper = report.paper_rows(study)
    assert [(r["width"], r["full weights"], r["best pruned weights"]) for r in paper] == [
        (10, 1000, round(1000 * 0.8**3)), (100, 10_000, round(10_000 * 0.8**4))]
    assert paper[1]["test error (full)"][0] == pytest.approx(0.020)
    assert paper[1]["test error (pruned)"][0] == pytest.approx(0.024)
    models = [(r["model"], r["level"]) for r in report.calibration_rows(study)]
    assert models == [("best small full (width=100)", 0), ("full (width=10)", 0),
                      ("best pruned (width=10)", 3), ("full (width=100)", 0),
                      ("best pruned (width=100)", 4)]


def test_study_table_of_a_setting_without_a_best_pruned_model():
    # A width too narrow to learn: the same error at every level, no replicate has a minimum.
    records = analysis.study_records([({"width": 1}, make_rows([[0.5, 0.5]] * 4, weights=100))])
    study = report.Study(Path("."), "s", ["width"], records, 15)
    (row,) = report.study_rows(study)
    assert row["best level"] is None and row["effective (per replicate)"] is None
    assert "| – | – | – |" in report.markdown([row], list(row))
