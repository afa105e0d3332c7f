"""Several processes on one machine and upgrades: two processes preparing one dataset, a run
named by an earlier version, partly deleted figures, a report of a study never started."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from imp_jax.run.config import legacy_fingerprint
from imp_jax.run.rundir import RunDir
from tests.cli.runs import MIXTURE
from tests.helpers import ROOT, TINY_MIXTURE, run_cli

pytestmark = pytest.mark.slow  # each runs the command line in subprocesses

# Also in the catalogue, where they need more than a tiny run: a SIGTERM to a sweep's local
# workers (tests/study/test_cluster.py::test_a_signal_stops_the_local_workers_for_real), three
# processes preparing MNIST at once (tests/data/test_data_cache.py::
# test_processes_preparing_one_dataset_take_turns), and SIGKILLs at random moments
# (tests/cli/test_soak.py).

# Enters preparation._preparing for a dataset in the data_dir argv[1], saying when it is inside.
PREPARING = """
import logging, sys, types
logging.basicConfig(level=logging.INFO, format="%(message)s")
from imp_jax.data import preparation
builder = types.SimpleNamespace(name="mnist", version="3.0.1",
                                data_dir=f"{sys.argv[1]}/mnist/3.0.1")
with preparation._preparing(builder):
    print("preparing", flush=True)
"""


def test_two_processes_preparing_one_dataset_take_turns(tmp_path: Path) -> None:
    data_dir = tmp_path / "tfds"
    data_dir.mkdir()
    err = tmp_path / "stderr"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    with open(data_dir / ".mnist-3.0.1.imp_jax.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the first process, preparing
        with open(err, "w") as stderr:
            second = subprocess.Popen([sys.executable, "-c", PREPARING, str(data_dir)], cwd=ROOT,
                                      env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
        try:
            deadline = time.monotonic() + 120
            while "waiting for another process" not in err.read_text():
                assert second.poll() is None and time.monotonic() < deadline, err.read_text()
                time.sleep(0.1)
            assert second.poll() is None  # it waits, and does not prepare beside the first
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    out, _ = second.communicate(timeout=60)
    assert second.returncode == 0 and out == "preparing\n", err.read_text()[-3000:]
    assert (f"waiting for another process preparing mnist in {data_dir} ..."
            in err.read_text().splitlines())


def test_a_run_named_by_an_earlier_version_is_reported_not_started_again(
        tiny_finished_run: Path, tmp_path: Path) -> None:
    # An upgrade that hashes other fields: the run lies under the name the old hash gave it.
    config = RunDir(tiny_finished_run).stored_config()
    old = Path("runs") / f"{config.name}-{legacy_fingerprint(config)}"
    shutil.copytree(tiny_finished_run, tmp_path / old)
    command = (f"--config={ROOT / 'configs' / 'mixture_linear.py'}:smoke", *TINY_MIXTURE)
    out = run_cli(*command, "--print_config", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == (
        f"{old} is finished (4 levels): reached imp.levels=3; running it again changes nothing")
    out = run_cli(*command, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"the run of this config is in {old} (named by an earlier version)" in out.stderr
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [old.name]


def test_partly_deleted_figures_are_drawn_again(tiny_finished_run: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "run"
    shutil.copytree(tiny_finished_run, workdir)
    expected = sorted(p.name for p in (workdir / "plots").iterdir())
    for name in ("ece_curve.pdf", "mixture_profile.png"):
        (workdir / "plots" / name).unlink()  # a drawing killed half-way, or a hasty tidy-up
    out = run_cli(workdir, module="experiments.report")
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"{workdir}: wrote {len(expected)} figure files" in out.stderr
    assert sorted(p.name for p in (workdir / "plots").iterdir()) == expected
    (workdir / "plots" / "calibration.png").unlink()
    out = run_cli(*MIXTURE, f"--workdir={workdir}")  # the run draws what is missing too
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"{workdir}: wrote {len(expected)} figure files" in out.stderr
    out = run_cli(workdir, module="experiments.report")
    assert f"{workdir}: the figures are up to date" in out.stderr, out.stderr[-3000:]


def test_report_only_in_a_fresh_folder_says_not_started(tmp_path: Path) -> None:
    out = run_cli("--report_only", f"--out={tmp_path / 'fresh'}", module="experiments.reproduce")
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert "unreadable" not in out.stderr, out.stderr[-3000:]
    assert f"mixture_nu: {tmp_path / 'fresh' / 'mixture_nu'}: not started yet (no sweep.json)" \
        in out.stderr, out.stderr[-3000:]
