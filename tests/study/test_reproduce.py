"""`python -m experiments.reproduce`: the study at the smoke scale end to end, the verdicts, and
the paper's own numbers fed through the tables as ours."""

import csv
import json

import numpy as np
import pytest

from configs import reproduce as scales
from imp_jax.core import analysis
from imp_jax.study import claims, reproduce
from imp_jax.study import verdicts as v
from imp_jax.study.claims import Measured
from tests.helpers import run_cli


def _tables(out):
    return {claim: list(csv.DictReader((out / f"{claim}.csv").open()))
            for claim in claims.CLAIMS}


@pytest.mark.slow
def test_smoke_scale_end_to_end(mnist_tfds, tmp_path):
    out = tmp_path / "study"
    args = ("--scale=smoke", f"--out={out}", f"--data_dir={mnist_tfds['data_dir']}",
            f"--mnist_manual_dir={mnist_tfds['manual_dir']}")
    first = run_cli(*args, module="experiments.reproduce")
    assert first.returncode == 0, first.stderr[-3000:]
    text = (out / "REPORT.md").read_text()
    assert text in first.stdout  # the report is printed
    assert text.splitlines()[2] == reproduce.SMOKE_NOTE  # one line first: not the science
    assert all(title in text for title in claims.CLAIMS.values())
    page = (out / "report.html").read_text()
    assert 'style="background:#eeeeee"' in page  # verdicts coloured
    tables = _tables(out)
    for claim, rows in tables.items():
        assert rows, claim
        for row in rows:
            assert row["verdict"] in (*v.WORDS, v.CHECK, v.REFERENCE), row
            for column in ("paper", "mean", "std"):  # numbers, not prose
                assert row[column] == "" or np.isfinite(float(row[column])), row
    summary = json.loads((out / "mnist_widths" / "width=300" / "summary.json").read_text())
    sdd = {r["quantity"]: r for r in tables["sdd"]}
    assert float(sdd["full weights"]["mean"]) == summary["total_weights"] == 238200
    assert sdd["full weights"]["verdict"] == v.CHECK and sdd["full weights"]["n"] == "2"
    assert sdd["full weights"]["counted"] == "False"
    # A 2-epoch network on 2 000 examples is never compared with the paper's full-data error.
    assert sdd["test error (full)"]["verdict"] == v.REFERENCE
    assert "data.train_subset 0 -> 2000" in sdd["test error (full)"]["detail"]
    widths = {(r["setting"], r["quantity"]): r for r in tables["widths"]}
    assert widths["two-layer P=2000", "full weights"]["verdict"] == v.NOT_RUN
    # Rows of a sweep not run at this scale are one line in the report.
    assert "| mnist_widths: two-layer P=1000, two-layer P=2000, two-layer P=5000, " in text
    cifar = [r for r in tables["calibration"] if r["setting"].startswith("CIFAR")]
    assert cifar and all(r["verdict"] == v.NOT_RUN for r in cifar)
    for figure in ("sdd_mnist_p300", "double_descent_mnist_widths", "ece_mnist_widths",
                   "true_distance_mixture_nu"):
        assert (out / "figures" / f"{figure}.png").is_file(), figure

    # A second call finds every point finished: it trains nothing and prints the same report.
    metrics = sorted(out.glob("*/*/metrics.jsonl"))
    assert len(metrics) == 8
    before = {p: p.stat().st_mtime_ns for p in metrics}
    second = run_cli(*args, module="experiments.reproduce")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "study: 8/8 points finished; nothing left" in second.stderr
    assert {p: p.stat().st_mtime_ns for p in metrics} == before
    assert _tables(out) == tables

    bad = run_cli(*args, "--only=sdd,nope", module="experiments.reproduce")
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1] == (
        "error: --only: unknown claim 'nope'; expected sdd, widths, mixtures, uncertainty, "
        "calibration")


def test_scales_cut_only_what_they_say():
    full = {s.key: s for s in scales.plan("full")}
    assert set(full) == {"mnist_widths", "mnist3_widths", "mixture_nu", "mixture_xor_nu",
                         "cifar10"}
    assert all(reproduce.reduction(s) == "" for s in full.values())
    cpu = {s.key: s for s in scales.plan("cpu", {"mnist": {"data.manual_dir": "m"}})}
    assert "cifar10" not in cpu and cpu["mnist_widths"].config.data.manual_dir == "m"
    cut = reproduce.reduction(cpu["mnist_widths"])
    assert "data.train_subset 0 -> 10000" in cut and "replicates 3 -> 2" in cut
    assert "prune.fraction 0.2 -> 0.36" in cut  # every other level of the study's grid
    assert "prune.exclude ['^output/'] -> []" in cut
    # Claim 4's settings run at the paper's schedule: only the precision differs.
    points = {p.name: p for p in reproduce.sweep_lib.points(cpu["mixture_nu"].config)}
    paper = {p.name: p.config for p in reproduce.sweep_lib.points(full["mixture_nu"].config)}
    assert reproduce.cuts(points["nu=0.2"].config, paper["nu=0.2"]) == ()
    assert points["nu=0.2"].config.replicates == 3
    assert "model.hidden [500] -> [200]" in reproduce.cuts(points["nu=1.0"].config,
                                                            paper["nu=1.0"])


# -- verdicts ------------------------------------------------------------------------------


@pytest.mark.parametrize("paper, ours, expected", [
    (5358, 5358, "matches"), (5358, 4287, "matches"), (5358, 3000, "differs: ours 0.56x"),
    (5358, 9000, "differs: ours 1.68x the paper's (more")])
def test_count_verdicts(paper, ours, expected):
    assert str(v.count(paper, ours)).startswith(expected)


def test_value_windows_come_from_the_standard_error_with_a_cap():
    assert v.value(0.194, [0.179, 0.181], "error").word == v.MATCHES
    assert str(v.value(0.194, [0.132, 0.134], "error")).startswith("differs: ours 0.061 lower")
    # Two noisy replicates do not widen the window past its cap: 0.2 ± 0.1 is not 0.05.
    assert v.value(0.05, [0.13, 0.27], "ece").word == v.DIFFERS
    assert v.WINDOWS["ece"].width([0.13, 0.27]) == v.WINDOWS["ece"].cap
    # Many tight replicates keep the floor.
    assert v.WINDOWS["error"].width([0.1] * 5) == v.WINDOWS["error"].floor
    assert v.check_equal(238200, 238199).detail.startswith("fails")


def test_directions_are_paired_per_replicate():
    # Replicates differ a lot from each other, but each pruned model beats its own full one.
    full, best = [0.30, 0.20, 0.10], [0.28, 0.18, 0.08]
    assert v.lower(full, best).word == v.MATCHES
    assert v.lower(full, best, paired=False).word == v.DIFFERS  # unpaired: lost in the spread
    assert str(v.lower(best, full)).startswith("differs: best pruned 0.02 higher")
    assert str(v.lower(full, [0.301, 0.199, 0.1])).startswith("differs: no clear difference")
    assert v.lower([0.2], [0.1]).word == v.UNDETERMINED


def test_ranges_ratios_and_spreads():
    assert v.in_range([200, 500], 600).word == v.MATCHES  # within the factor
    assert str(v.in_range([200, 500], 1000)).startswith("differs: ours 2.00x")
    # A ratio of two counts on the 20% grid is judged within one step: 1.95 and 2.44 are the
    # grid's nearest ratios to 2.
    assert v.ratio(2.0, 2.44, 1.25).word == v.MATCHES and v.ratio(2.0, 1.56, 1.25).word == (
        v.DIFFERS)
    # "Comparable" is one-sided: a smaller spread than the paper's matches.
    assert v.at_most(5.6, 1.2, v.COUNT_FACTOR, "spread").word == v.MATCHES
    assert v.at_most(1.7, 3.0, v.COUNT_FACTOR, "spread").word == v.DIFFERS


def _rows(errors, **metrics):
    return [{"level": i, "replicate": r, "remaining_weights": 1000 - 100 * i,
             "total_weights": 1000, "test_error": e[r],
             **{k: vals[i][r] for k, vals in metrics.items()}}
            for i, e in enumerate(errors) for r in range(len(e))]


def test_a_path_on_which_pruning_only_hurts_has_no_double_descent():
    m = reproduce.measure(_rows([[0.10, 0.10], [0.101, 0.101], [0.20, 0.21]]), finished=True)
    assert m.levels["best"] is None and m.why_no_best == analysis.STATUS_NONE
    row = claims._shape_row("double descent", None, m, "mnist_widths")
    assert row.verdict.word == v.DIFFERS and "only hurt" in row.verdict.detail


def test_a_plain_u_shape_is_not_a_double_descent():
    u = reproduce.measure(_rows([[0.20, 0.20], [0.12, 0.121], [0.10, 0.101], [0.30, 0.31]]),
                          finished=True)
    assert u.levels["best"] is not None and u.levels["peak"] is None
    assert str(claims._shape_row("q", None, u, "k").verdict).startswith("differs: no peak")
    double = reproduce.measure(_rows([[0.15, 0.15], [0.20, 0.21], [0.10, 0.101],
                                      [0.30, 0.31]]), finished=True)
    row = claims._shape_row("q", None, double, "k")
    assert row.verdict.word == v.MATCHES and "peak 0.205" in row.ours


# -- the paper's numbers fed through the tables ---------------------------------------------


class _Source:
    def __init__(self, settings):
        self._settings = settings

    def ran(self, key):
        return key in self._settings

    def settings(self, key):
        return self._settings.get(key, [])


def _paper_as_ours(paper) -> _Source:
    """Every published number as one of our settings, each with three identical replicates."""
    def point(total, best=None, dense_metrics=None, best_metrics=None):
        def level(m):
            return None if m is None else {k: [x] * 3 for k, x in m.items()}
        return Measured(3, total, {"dense": level(dense_metrics or {}), "peak": None,
                                   "best": level(best_metrics)},
                        {"dense": total, "peak": None, "best": best}, peak_measured=False)

    def number(setting, quantity, claim="widths"):
        entry = paper.get((claim, setting, quantity))
        return None if entry is None else entry["value"]

    settings = {"mnist_widths": [], "mnist3_widths": [], "mixture_nu": [],
                "mixture_xor_nu": [], "cifar10": []}
    for key, network, rest in (("mnist_widths", "two-layer", ()),
                               ("mnist3_widths", "three-layer", (100,))):
        for width in claims._widths(_Source({}), paper, key, network):
            s = f"{network} P={width}"
            dense = {"test_error": number(s, "test error (full)")}
            best = {"test_error": number(s, "test error (pruned)")}
            calibration = f"MNIST {s}"
            for labels, prefix in (("clean", "test"), ("noisy", "test_noisy")):
                dense[f"{prefix}_ece_15"] = number(
                    calibration, f"ECE, {labels} test labels (full)", "calibration")
                best[f"{prefix}_ece_15"] = number(
                    calibration, f"ECE, {labels} test labels (best pruned)", "calibration")
            settings[key].append(({"width": width}, point(
                claims.fcn_weights((width, *rest)), number(s, "best pruned weights"),
                {k: x for k, x in dense.items() if x is not None},
                {k: x for k, x in best.items() if x is not None})))
    cifar = {f"{prefix}_ece_15": (number("CIFAR-10 ResNet-20", f"ECE, {lab} test labels (full)",
                                         "calibration"),
                                  number("CIFAR-10 ResNet-20",
                                         f"ECE, {lab} test labels (best pruned)", "calibration"))
             for lab, prefix in (("clean", "test"), ("noisy", "test_noisy"))}
    settings["cifar10"].append(({"width": 80}, point(
        272_474, 10_000, {k: a for k, (a, _) in cifar.items()},
        {k: b for k, (_, b) in cifar.items()})))
    for task, key, nu in claims.UNCERTAINTY_SETTINGS:
        s = f"{task} nu={nu:g}"
        largest = [number(s, f"largest |p - p*| ({m})", "uncertainty")
                   for m in ("full", "best pruned")]
        settings[key].append(({"nu": nu}, point(
            51_000, 700, {"true_abs_error_max": largest[0]}, {"true_abs_error_max": largest[1]})))
    # The linear range's middle, and twice it for XOR, at an nu both tasks have.
    low, high = paper[("mixtures", "linear", "effective parameters")]["value"]
    settings["mixture_nu"].append(({"nu": 1.0}, point(51_000, (low + high) / 2, {}, {})))
    settings["mixture_xor_nu"].append(({"nu": 1.0}, point(51_000, low + high, {}, {})))
    return _Source(settings)


def test_the_papers_own_numbers_match_wherever_they_can_be_compared():
    paper = claims.paper_values()
    tables = claims.tables(_paper_as_ours(paper), list(claims.CLAIMS), paper)
    rows = [r for t in tables for r in t.rows if not r.extension]
    assert not [r for r in rows if r.verdict.word in (v.DIFFERS, v.NOT_RUN, v.REFERENCE)], [
        (r.setting, r.quantity, str(r.verdict)) for r in rows
        if r.verdict.word in (v.DIFFERS, v.NOT_RUN, v.REFERENCE)]
    # What the paper prints no number for: the peak, and the fresh-sample calibration.
    undetermined = {(r.setting, r.quantity) for r in rows if r.verdict.word == v.UNDETERMINED}
    assert undetermined == {
        ("two-layer P=300", "double descent: a peak above the dense error, then a minimum "
                            "below it"),
        *((f"{t} nu={nu:g}", q) for t, _, nu in claims.UNCERTAINTY_SETTINGS
          for q in ("fresh-sample ECE: best pruned vs full",
                    "fresh-sample overconfidence (full)"))}
    checks = [r for r in rows if r.verdict.word == v.CHECK]
    assert checks and all(r.verdict.detail == "ok" for r in checks)
    spreads = [r for r in rows if r.quantity == "best pruned weights, largest / smallest"]
    assert [r.verdict.word for r in spreads] == [v.MATCHES, v.MATCHES]
    assert sum(r.counted for r in rows) >= 40


def test_paper_values_have_sources():
    values = json.loads(claims.PAPER_FILE.read_text())["values"]
    assert len({(e["claim"], e["setting"], e["quantity"]) for e in values}) == len(values)
    kinds = {"count", "error", "ece", "probability", "range", "ratio", "direction", "shape",
             "positive"}
    assert all(e["source"] and e["kind"] in kinds for e in values)
    assert not any(e["source"].startswith("architecture") for e in values)  # not published
