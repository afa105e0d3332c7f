"""One writer per run directory, readers that never write, signals honoured within seconds, and
files that colleagues can read."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from imp_jax.plots import run as run_plots
from imp_jax.run.rundir import FILE_MODE, RunDir
from tests.helpers import ROOT, TINY_MIXTURE, run_cli

MIXTURE = ["--config=configs/mixture_linear.py:smoke", *TINY_MIXTURE]
# A run that trains until it is stopped.
LONG = ("--config.train.epochs=20000", "--config.checkpoint.every_epochs=0")


def start(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    return subprocess.Popen([sys.executable, "-m", "experiments.run", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def rows(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def finished(tiny_finished_run: Path) -> Path:
    return tiny_finished_run


@pytest.mark.slow
def test_a_second_trainer_is_refused_and_no_row_is_repeated(tmp_path: Path) -> None:
    workdir = tmp_path / "run"
    first = start(*MIXTURE, *LONG, f"--workdir={workdir}")
    try:
        wait_for(lambda: RunDir(workdir).holder() is not None)
        second = run_cli(*MIXTURE, *LONG, f"--workdir={workdir}")
        assert second.returncode == 2, second.stderr[-3000:]
        line = second.stderr.strip().splitlines()[-1]
        assert line.startswith(f"error: {workdir} is in use by another process (pid "
                               f"{first.pid} on ")
        assert "since" in line and "wait for it to finish, or stop it first" in line
    finally:
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=120)
    assert first.returncode == 143, err[-3000:]
    keys = [(r["level"], r["replicate"]) for r in rows(workdir)] if (
        workdir / "metrics.jsonl").exists() else []
    assert len(keys) == len(set(keys))
    assert RunDir(workdir).holder() is None  # released by the process's end


def test_repeated_rows_are_dropped_on_start_and_the_summary_rebuilt(finished: Path,
                                                                    tmp_path: Path) -> None:
    workdir = tmp_path / "run"
    shutil.copytree(finished, workdir)
    text = (workdir / "metrics.jsonl").read_text()
    (workdir / "metrics.jsonl").write_text(text + text.splitlines(keepends=True)[0] * 2)
    summary = json.loads((workdir / "summary.json").read_text())
    (workdir / "summary.json").write_text(json.dumps({**summary, "replicates": 4}))
    out = run_cli(*MIXTURE, f"--workdir={workdir}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "dropping 2 repeated rows" in out.stderr
    assert (workdir / "metrics.jsonl").read_text() == text
    assert json.loads((workdir / "summary.json").read_text()) == summary


def test_readers_skip_a_torn_line_without_writing(finished: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "run"
    shutil.copytree(finished, workdir)
    torn = (workdir / "metrics.jsonl").read_text()[:-100]
    (workdir / "metrics.jsonl").write_text(torn)
    inode = (workdir / "metrics.jsonl").stat().st_ino
    out = run_cli(str(workdir), "--noplots", f"--csv={tmp_path / 'r.csv'}",
                  module="experiments.report")
    assert out.returncode == 0, out.stderr[-3000:]
    assert (workdir / "metrics.jsonl").read_text() == torn
    assert (workdir / "metrics.jsonl").stat().st_ino == inode
    assert len(RunDir(workdir).read_rows()) == 7


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "after"), [(signal.SIGINT, "start-up"),
                                               (signal.SIGTERM, "training")])
def test_signals_are_honoured_within_seconds(tmp_path: Path, signum: int, after: str) -> None:
    workdir = tmp_path / "run"
    proc = start(*MIXTURE, *LONG, f"--workdir={workdir}")
    if after == "training":
        wait_for(lambda: (workdir / "status.json").exists())
    else:
        time.sleep(0.5)  # importing JAX
    sent = time.monotonic()
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert time.monotonic() - sent < 15
    assert proc.returncode == 128 + signum, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"interrupted: stopped by signal {signum}")
    assert "Traceback" not in err
    if after == "start-up":
        assert "nothing was lost" in last and not workdir.exists()


def test_a_report_on_a_run_in_training_says_so(finished: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "run"
    shutil.copytree(finished, workdir)
    with RunDir(workdir).locked():
        out = run_cli(str(workdir), "--noplots", f"--csv={tmp_path / 'r.csv'}",
                      module="experiments.report")
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"{workdir}: in progress (pid {os.getpid()} on " in out.stderr


def test_files_follow_the_umask(finished: Path) -> None:
    for name in ("config.json", "summary.json", "metrics.jsonl", "status.json"):
        assert (finished / name).stat().st_mode & 0o777 == FILE_MODE, name
    assert all(p.stat().st_mode & 0o777 == FILE_MODE for p in (finished / "plots").iterdir())


def test_a_figure_is_replaced_whole_or_not_at_all(tmp_path: Path, monkeypatch) -> None:
    rows = [{"level": 0, "replicate": 0, "remaining_weights": 10, "train_error": 0.1,
             "test_error": 0.2}]
    [png, _] = run_plots.sdd_curve(rows, tmp_path, best=0)
    before = png.read_bytes()

    def broken(self, fname, **kwargs):
        fname.write(b"half a figure")
        raise OSError("killed while drawing")

    monkeypatch.setattr("matplotlib.figure.Figure.savefig", broken)
    with pytest.raises(OSError, match="killed while drawing"):
        run_plots.sdd_curve(rows, tmp_path, best=0)
    assert png.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sdd_curve.pdf", "sdd_curve.png"]
