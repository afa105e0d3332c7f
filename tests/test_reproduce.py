"""`python -m experiments.reproduce`: the study at the smoke scale end to end, and the verdicts."""

import csv
import json

import pytest

from configs import reproduce as scales
from imp_jax import reproduce
from tests.test_run_cli import run_cli

VERDICT_WORDS = (*reproduce.VERDICTS, "no published value")


def _tables(out):
    return {claim: list(csv.DictReader((out / f"{claim}.csv").open()))
            for claim in reproduce.CLAIMS}


def test_smoke_scale_end_to_end(mnist_tfds, tmp_path):
    out = tmp_path / "study"
    args = ("--scale=smoke", f"--out={out}", f"--data_dir={mnist_tfds['data_dir']}",
            f"--mnist_manual_dir={mnist_tfds['manual_dir']}")
    first = run_cli(*args, module="experiments.reproduce")
    assert first.returncode == 0, first.stderr[-3000:]
    text = (out / "REPORT.md").read_text()
    assert text in first.stdout  # the report is printed
    assert all(title in text for title in reproduce.CLAIMS.values())
    assert "Reduced scale" in text and (out / "report.html").is_file()
    tables = _tables(out)
    paper = reproduce.paper_values()
    for claim, rows in tables.items():
        assert rows, claim
        for row in rows:
            assert row["verdict"].startswith(VERDICT_WORDS), row
            # Never a paper value where ours belong; a full network's weight count is the
            # architecture's, equal by construction (checked against the runs below).
            if row["paper"] != "–" and row["quantity"] != "full weights":
                assert row["paper"] not in row["ours"], row
    # A row's paper value is the published one of its setting and quantity.
    shown = {(r["setting"], r["quantity"]): r["paper"] for rows in tables.values() for r in rows}
    for (_, setting, quantity), entry in paper.items():
        if (setting, quantity) in shown:
            assert shown[setting, quantity] == reproduce.fmt_paper(entry)
    summary = json.loads((out / "mnist_widths" / "width=300" / "summary.json").read_text())
    assert summary["total_weights"] == 238200
    sdd = {r["quantity"]: r for r in tables["sdd"]}
    assert sdd["full weights"]["ours"] == "238 200" and sdd["full weights"]["verdict"] == "matches"
    assert sdd["full weights"]["replicates"] == "2"
    widths = {(r["setting"], r["quantity"]): r for r in tables["widths"]}
    assert widths["two-layer P=50", "full weights"]["ours"] == "39 700"
    assert widths["two-layer P=2000", "full weights"]["verdict"] == reproduce.NOT_RUN
    cifar = [r for r in tables["calibration"] if r["setting"].startswith("CIFAR")]
    assert cifar and all(r["verdict"] == reproduce.NOT_RUN for r in cifar)
    assert any(r["setting"].startswith("XOR") for r in tables["uncertainty"])
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
    assert "prune.fraction" not in cut  # the study's 20% per level is kept
    assert "prune.exclude ['^output/'] -> []" in cut
    assert cpu["mixture_nu"].config.data.manual_dir is None or "manual_dir" not in cut


@pytest.mark.parametrize("paper, ours, expected", [
    (5358, 5358, "matches"), (5358, 4287, "matches"), (5358, 3000, "differs: ours 0.56x"),
    (5358, 9000, "differs: ours 1.68x the paper's (more"),
    (5358, None, "differs: no best pruned model")])
def test_count_verdicts(paper, ours, expected):
    assert reproduce.verdict_count(paper, ours).startswith(expected)


def test_value_and_direction_verdicts():
    assert reproduce.verdict_value(0.194, {"mean": 0.180, "std": 0.001}, "error") == "matches"
    assert reproduce.verdict_value(0.194, {"mean": 0.133, "std": 0.01}, "error") == (
        "differs: ours 0.061 lower")
    assert reproduce.verdict_value(0.05, {"mean": 0.2, "std": 0.1}, "ece") == "matches"  # 2 std
    assert reproduce.verdict_count(238200, 238199, exact=True).startswith("differs")
    full, best = {"mean": 0.2, "std": 0.01}, {"mean": 0.1, "std": 0.01}
    assert reproduce.verdict_lower(full, best) == "matches"
    assert reproduce.verdict_lower(best, full).startswith("differs: best pruned 0.1 higher")
    assert reproduce.verdict_lower(full, {"mean": 0.195, "std": 0.01}).startswith(
        "differs: no clear difference")
    assert reproduce.verdict_range([200, 500], 600) == "matches"  # within the factor
    assert reproduce.verdict_range([200, 500], 1000).startswith("differs: ours 2.00x")
    assert reproduce.verdict_ratio(2.0, 3.83).startswith("differs: ours 3.83x, above")


def test_paper_values_have_sources():
    values = json.loads(reproduce.PAPER_FILE.read_text())["values"]
    assert len({(v["claim"], v["setting"], v["quantity"]) for v in values}) == len(values)
    assert all(v["source"] and v["kind"] in reproduce.TOLERANCES for v in values)
