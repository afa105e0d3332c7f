"""Recovering through the command line: a torn metrics line, an unreadable progress checkpoint,
missing or unreadable levels, an edited config, a full disk; the advice of every message works
when followed, and ``--print_config`` says what running would do.

The run directories are copies of the session's tiny finished run. A disk that fills up in the
middle of a run is a file-size limit (``RLIMIT_FSIZE``, which root is subject to too; Python
then gets EFBIG) that a metrics append crosses.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.harness import soak
from imp_jax.run import driver
from imp_jax.run.config import set_field
from imp_jax.run.rundir import RunDir
from tests.cli.runs import (
    LAST,
    LIMITED,
    MIXTURE,
    PROGRESS,
    corrupt,
    edit_config,
    error_line,
    rows,
    unfinish,
    without_timing,
)
from tests.helpers import ROOT, run_cli

pytestmark = pytest.mark.slow  # each runs the command line in subprocesses

def test_truncated_last_row_is_rewritten(tiny_finished_run: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "run"
    shutil.copytree(tiny_finished_run, workdir)
    text = (workdir / "metrics.jsonl").read_text()
    (workdir / "metrics.jsonl").write_text(text[: len(text) - 200])  # replicate 1 of level 3
    out = run_cli(*MIXTURE, f"--workdir={workdir}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "dropping a truncated last line" in out.stderr
    assert without_timing(rows(workdir)) == without_timing(rows(tiny_finished_run))


def test_unreadable_progress_checkpoint_restarts_the_level(tiny_finished_run: Path,
                                                           tmp_path: Path) -> None:
    workdir = tmp_path / "run"
    shutil.copytree(tiny_finished_run, workdir)
    unfinish(workdir)
    corrupt(f"checkpoints/progress/{PROGRESS}/state/d/*", "garbage")(workdir)
    out = run_cli(*MIXTURE, f"--workdir={workdir}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert (f"checkpoint {workdir}/checkpoints/progress/{PROGRESS} is unreadable" in out.stderr
            and f"restarting level {LAST} from its beginning" in out.stderr)
    assert soak.compare(tiny_finished_run, workdir).ok  # the same rows, masks and params


def follow(line: str, after: str) -> subprocess.CompletedProcess:
    """Runs the ``python -m MODULE ARGS`` that ``line`` names after ``after``."""
    command = line.split(after, 1)[1].split(" (its metrics rows are kept)")[0].split()
    assert command[:2] == ["python", "-m"], line
    return run_cli(*command[3:], module=command[2])


@pytest.mark.parametrize("level", [0, 1])  # the dense level, and one the run reads only here
def test_following_the_advice_for_an_unreadable_level(tiny_finished_run: Path, tmp_path: Path,
                                                       level: int) -> None:
    workdir = tmp_path / "run"
    shutil.copytree(tiny_finished_run, workdir)
    corrupt(f"checkpoints/levels/{level}/state/d/*", "truncate")(workdir)
    export = (workdir, f"--level={level}", f"--out={tmp_path / 'out'}")
    line = error_line(run_cli(*export, module="experiments.export"))
    assert line.startswith(f"error: checkpoint {workdir}/checkpoints/levels/{level} is "
                           f"unreadable (")
    assert line.endswith(f"; delete that directory, then train it again with: python -m "
                         f"experiments.run --workdir={workdir} (its metrics rows are kept)")
    shutil.rmtree(workdir / "checkpoints" / "levels" / str(level))
    out = follow(line, "then train it again with: ")
    assert out.returncode == 0, out.stderr[-3000:]
    assert (f"checkpoint {workdir}/checkpoints/levels/{level} is missing; training level "
            f"{level}") in out.stderr
    assert rows(workdir) == rows(tiny_finished_run)  # kept, not written again
    assert soak.compare(tiny_finished_run, workdir).ok  # retrained to the same masks and params
    assert run_cli(*export, module="experiments.export").returncode == 0


def test_following_the_advice_of_export_for_a_missing_level(tiny_finished_run: Path,
                                                            tmp_path: Path) -> None:
    workdir = tmp_path / "run"
    shutil.copytree(tiny_finished_run, workdir)
    shutil.rmtree(workdir / "checkpoints" / "levels" / "2")
    export = (workdir, "--level=2", f"--out={tmp_path / 'out'}")
    line = error_line(run_cli(*export, module="experiments.export"))
    out = follow(line, "train it again with: ")
    assert out.returncode == 0, out.stderr[-3000:]
    assert soak.compare(tiny_finished_run, workdir).ok
    out = run_cli(*export, module="experiments.export")
    assert out.returncode == 0 and "exported level 2 replicate 0" in out.stdout, out.stderr


def test_following_the_advice_for_a_missing_level(tiny_finished_run: Path,
                                                   tmp_path: Path) -> None:
    workdir = tmp_path / "run"
    shutil.copytree(tiny_finished_run, workdir)
    shutil.rmtree(workdir / "checkpoints" / "levels" / "0")
    line = error_line(run_cli(workdir, "--redraw", module="experiments.report"))
    assert line == (f"error: checkpoint {workdir}/checkpoints/levels/0 is missing; train it again "
                    f"with: python -m experiments.run --workdir={workdir} (its metrics rows are "
                    f"kept)")
    out = follow(line, "train it again with: ")
    assert out.returncode == 0, out.stderr[-3000:]
    assert soak.compare(tiny_finished_run, workdir).ok
    out = run_cli(workdir, "--redraw", module="experiments.report")
    assert out.returncode == 0 and "wrote 12 figure files" in out.stderr, out.stderr[-3000:]


def test_following_the_advice_for_an_edited_config(tiny_finished_run: Path,
                                                   tmp_path: Path) -> None:
    workdir = tmp_path / "run"
    shutil.copytree(tiny_finished_run, workdir)
    edit_config("model", "hidden", [9])(workdir)
    line = error_line(run_cli(workdir, "--redraw", module="experiments.report"))
    assert line.endswith("if config.json was edited, put back the config the run was trained "
                         "with")
    shutil.copy(tiny_finished_run / "config.json", workdir / "config.json")
    out = run_cli(workdir, "--redraw", module="experiments.report")
    assert out.returncode == 0, out.stderr[-3000:]


def test_following_the_advice_of_export(tiny_finished_run: Path, tmp_path: Path) -> None:
    export = (tiny_finished_run, f"--out={tmp_path}")
    line = error_line(run_cli(*export, module="experiments.export"))
    assert line.endswith("; give --level=N")
    out = run_cli(*export, "--level=0", module="experiments.export")
    assert out.returncode == 0 and (tmp_path / "compact.npz").is_file(), out.stderr[-3000:]
    line = error_line(run_cli(*export, "--level=1", module="experiments.export"))
    assert line.endswith("exists (an earlier export); give another --out, or --overwrite to "
                         "replace it")
    out = run_cli(*export, "--level=1", "--overwrite", module="experiments.export")
    assert out.returncode == 0 and "exported level 1 replicate 0" in out.stdout


def test_print_config_says_what_running_would_do(tiny_finished_run: Path, tmp_path: Path) -> None:
    stored = RunDir(tiny_finished_run).stored_config()

    def plan(run: Path = tiny_finished_run, **fields: object) -> str:
        config = copy.deepcopy(stored)
        for key, value in fields.items():
            set_field(config, key, value)
        return driver.plan(config, str(run))

    same = "running it again changes nothing"
    assert plan() == f"is finished (4 levels): reached imp.levels=3; {same}"
    # Stopped by other conditions than the run's, as the run itself would be.
    assert plan(**{"imp.levels": 2}) == f"is finished (4 levels): reached imp.levels=2; {same}"
    assert plan(**{"imp.min_weights": 60, "imp.levels": 10}) == (
        "is finished (4 levels): the next level would keep 38 prunable weights, fewer than "
        f"imp.min_weights=60; {same}")
    assert plan(**{"imp.levels": 5}) == (
        "would resume at level 4, epoch 0, after 4 finished level(s)")
    damaged = tmp_path / "run"
    shutil.copytree(tiny_finished_run, damaged)
    shutil.rmtree(damaged / "checkpoints" / "levels" / "1")
    assert plan(damaged) == ("is finished (4 levels): reached imp.levels=3; would train level(s) "
                             "1 again (checkpoint missing)")
    # Killed between the last level's checkpoint and its rows: the run writes them, then
    # decides as for a finished run (the counts come from the saved masks).
    unrecorded = tmp_path / "unrecorded"
    shutil.copytree(tiny_finished_run, unrecorded)
    lines = (unrecorded / "metrics.jsonl").read_text().splitlines(keepends=True)
    (unrecorded / "metrics.jsonl").write_text("".join(lines[:-2]))
    write = f"would write the rows of level {LAST} from its checkpoint"
    assert plan(unrecorded) == f"is finished (4 levels): reached imp.levels=3; {write}"
    assert plan(unrecorded, **{"imp.min_weights": 60, "imp.levels": 10}) == (
        "is finished (4 levels): the next level would keep 38 prunable weights, fewer than "
        f"imp.min_weights=60; {write}")
    assert plan(unrecorded, **{"imp.levels": 5}) == f"{write}, then resume at level 4"
    out = run_cli(*MIXTURE, f"--workdir={unrecorded}")
    assert out.returncode == 0 and "is finished (reached imp.levels=3)" in out.stderr, out.stderr
    assert without_timing(rows(unrecorded)) == without_timing(rows(tiny_finished_run))


def test_disk_full_mid_run_keeps_the_run_and_recovers(tiny_finished_run: Path,
                                                      tmp_path: Path) -> None:
    workdir = tmp_path / "run"
    shutil.copytree(tiny_finished_run, workdir)
    size = (workdir / "metrics.jsonl").stat().st_size
    # Extending the run to level 4: checkpoints and summary.json fit, but the rows of level 4
    # cross the limit after 300 bytes, leaving a torn line.
    args = [*MIXTURE, "--config.imp.levels=4", f"--workdir={workdir}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", LIMITED, "RLIMIT_FSIZE", str(size + 300),
                          *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert (f"error: cannot write {workdir}/metrics.jsonl: [Errno 27] File too large"
            in error_line(out))
    assert (workdir / "metrics.jsonl").read_text()[:size] == (
        tiny_finished_run / "metrics.jsonl").read_text()
    assert (workdir / "checkpoints" / "levels" / "4").is_dir()
    out = run_cli(*args)
    assert out.returncode == 0, out.stderr[-3000:]
    got = rows(workdir)
    assert got[:8] == rows(tiny_finished_run)
    assert [(r["level"], r["replicate"]) for r in got[8:]] == [(4, 0), (4, 1)]


def test_a_model_too_large_for_the_memory_limit_stops_with_one_line(tmp_path: Path) -> None:
    # Under an address-space limit (ulimit -v) XLA:CPU blocked forever when the state did not
    # fit; the run must say so before allocating it, and leave nothing behind.
    workdir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    out = subprocess.run(
        [sys.executable, "-c", LIMITED, "RLIMIT_AS", str(6 * 2**30), *MIXTURE,
         "--config.model.hidden=(3000000,)", "--config.data.mixture_dim=100",
         f"--workdir={workdir}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    line = error_line(out)
    assert line.startswith("error: out of memory: a run of 2 replicate(s) needs at least ")
    assert "the address-space limit (ulimit -v) leaves" in line
    assert not workdir.exists()


