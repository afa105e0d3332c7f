"""Resuming under SIGKILL, SIGTERM and SIGINT (experiments/soak.py on a tiny run), and
determinism: the same config run twice in fresh processes gives the same rows and bitwise the
same masks and params."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from experiments.harness import soak
from tests.helpers import ROOT, TINY_MIXTURE

# Every test reads the soak: a tiny run killed and resumed in subprocesses.
pytestmark = pytest.mark.slow

CONFIG = [f"--config={ROOT / 'configs' / 'mixture_linear.py'}:smoke", *TINY_MIXTURE]


@pytest.fixture(scope="module")
def soaked(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, soak.Report]:
    """The soak test with 3 kills; its folder holds the reference and the resumed runs."""
    base = tmp_path_factory.mktemp("soak")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JAX_PLATFORMS", "cpu")  # the runs inherit the environment
        return base, soak.soak(CONFIG, base, kills=3, seed=0)


def test_killed_and_signalled_run_resumes_to_the_same_results(soaked) -> None:
    _, report = soaked
    assert report.ok, "\n".join(report.lines())
    assert report.kills == report.survived == 3 and sum(report.moments.values()) == 3
    assert [s.split(":")[0] for s in report.signals] == ["SIGTERM", "SIGINT"]
    assert report.lines()[-1] == ("soak: kills survived 3/3, rows lost 0, duplicates 0, rows "
                                  "equal: yes, masks equal: yes, params equal: yes")


def test_same_config_in_fresh_processes_is_bitwise_identical(soaked, tiny_finished_run) -> None:
    base, _ = soaked
    # The session's shared run is the same config, trained by another fresh process.
    comparison = soak.compare(base / "reference", tiny_finished_run)
    assert comparison.ok, comparison
    lines = (tiny_finished_run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 4 * 2  # levels 0-3, 2 replicates: the comparison was not vacuous


def test_compare_finds_differences(soaked, tmp_path: Path) -> None:
    base, _ = soaked
    reference = base / "reference"
    rows = (reference / "metrics.jsonl").read_text().splitlines(keepends=True)

    def variant(name: str, metrics: list[str], swap_levels: bool = False) -> soak.Comparison:
        workdir = tmp_path / name
        shutil.copytree(reference, workdir)
        (workdir / "metrics.jsonl").write_text("".join(metrics))
        if swap_levels:  # level 3's checkpoint replaced by level 2's: other masks and params
            levels = workdir / "checkpoints" / "levels"
            shutil.rmtree(levels / "3")
            shutil.copytree(levels / "2", levels / "3")
        return soak.compare(reference, workdir)

    changed = json.loads(rows[3])
    changed["test_error"] += 1e-7
    timing = json.loads(rows[3])
    timing["time_train_s"] = 123.0
    assert variant("same_but_timing", [*rows[:3], json.dumps(timing) + "\n", *rows[4:]]).ok
    got = variant("one_value", [*rows[:3], json.dumps(changed) + "\n", *rows[4:]])
    assert not got.rows_equal and got.masks_equal
    got = variant("lost_and_duplicated", [*rows[:-1], rows[0]])
    assert (got.rows_lost, got.duplicates) == (1, 1)
    got = variant("other_masks", rows, swap_levels=True)
    assert got.rows_equal and not got.masks_equal and not got.params_equal
