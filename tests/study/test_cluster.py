"""Sweeps across workers: several workers on one sweep directory (one of them killed), the local
submitit launcher, SLURM submission through stand-in commands, and the sweep status."""

import contextlib
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import submitit

from imp_jax.run import driver
from imp_jax.run.config import ConfigError
from imp_jax.run.rundir import RunDir
from imp_jax.study import cluster, sweep
from tests.helpers import ROOT, TINY_FLAGS, finished, python, results, tiny_sweep, uninterrupted

WIDTHS = (4, 8, 12)
NAMES = sorted(f"width={w}" for w in WIDTHS)
FLAGS = [*TINY_FLAGS, "--config.sweep.width=(4,8,12)", "--config.imp.levels=3"]


def three_points():
    c = tiny_sweep()
    c.sweep.width = WIDTHS
    c.imp.levels = 3
    return c


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return uninterrupted(tmp_path_factory, three_points())


def ran(log_texts):
    """The points the workers' logs say they ran, sorted."""
    return sorted(m for text in log_texts for m in re.findall(r"point \d/3 (width=\d+): ran",
                                                              text))


def assert_like_reference(sweep_dir, reference):
    for width in WIDTHS:
        assert finished(sweep_dir / f"width={width}")
        assert results(sweep_dir / f"width={width}") == results(reference / f"width={width}")


@pytest.mark.slow
def test_workers_divide_the_points_and_take_over_a_killed_one(reference, tmp_path):
    sweep_dir = tmp_path / "sweep"
    logs = [tmp_path / f"worker{i}.log" for i in range(3)]
    procs = [python("experiments.sweep", *FLAGS, f"--sweep_dir={sweep_dir}",
                    output=log.open("w")) for log in logs]
    # Kill the worker of the first point seen mid-way: a level finished, the point not. The
    # lock files are read, not locked, so that looking cannot turn a worker away.
    victim, deadline = None, time.monotonic() + 300
    while victim is None and time.monotonic() < deadline:
        for width in WIDTHS:
            run_dir = sweep_dir / f"width={width}"
            try:
                pid = int((run_dir / ".lock").read_text().split()[1])
            except (OSError, IndexError, ValueError):
                continue
            worker = next((p for p in procs if p.pid == pid and p.poll() is None), None)
            if worker and (run_dir / "metrics.jsonl").exists() and not finished(run_dir):
                worker.send_signal(signal.SIGKILL)
                victim, killed = worker, run_dir
                break
        time.sleep(0.005)
    assert victim is not None, "no point was seen mid-way"
    for proc in procs:
        assert proc.wait(timeout=600) in (0, -signal.SIGKILL)
    assert victim.returncode == -signal.SIGKILL
    if not finished(killed):  # the others were done before its lock was freed: start another
        extra = tmp_path / "extra.log"
        assert python("experiments.sweep", *FLAGS, f"--sweep_dir={sweep_dir}",
                      output=extra.open("w")).wait(timeout=600) == 0
        logs.append(extra)
    survivors = [log.read_text() for i, log in enumerate(logs)
                 if i >= len(procs) or procs[i] is not victim]
    # Every point ran to its end exactly once; the killed one resumed to the same rows.
    assert ran(survivors) == NAMES
    assert_like_reference(sweep_dir, reference)


@pytest.mark.slow
def test_local_launcher_runs_the_workers_as_jobs(reference, tmp_path):
    sweep_dir = tmp_path / "sweep"
    proc = python("experiments.sweep", *FLAGS, f"--sweep_dir={sweep_dir}", "--launcher=local",
                  "--workers=2")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert "submitted 2 worker(s) to local" in err
    assert "\n| sweep | width |" in out  # the study table
    assert_like_reference(sweep_dir, reference)
    job_logs = sorted((sweep_dir / "jobs").glob("*_log.err"))
    assert len(job_logs) == 2  # each job's log
    assert ran(p.read_text() for p in job_logs) == NAMES


def job_processes(folder):
    """The processes of submitit jobs with ``folder``: their shells, controllers and workers."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes().decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if str(folder) in command and state != "Z":
            found.append(int(entry.name))
    return found


@pytest.mark.slow  # two worker processes start, train and are stopped: about a minute
@pytest.mark.parametrize("signum", [signal.SIGTERM])
def test_a_signal_stops_the_local_workers_for_real(tmp_path, signum):
    sweep_dir = tmp_path / "sweep"
    proc = python("experiments.sweep", *FLAGS, "--config.train.epochs=100000",
                  "--config.checkpoint.every_epochs=0", f"--sweep_dir={sweep_dir}",
                  "--launcher=local", "--workers=2")
    try:
        deadline = time.monotonic() + 300
        while sum(RunDir(sweep_dir / name).holder() is not None for name in NAMES) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1]
            time.sleep(0.2)  # until both workers train a point
        assert len(job_processes(sweep_dir / "jobs")) >= 4  # shells, controllers, workers
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
    finally:  # after a failure, nothing of the test is left running
        if proc.poll() is None:
            proc.kill()
        for pid in job_processes(sweep_dir / "jobs"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert proc.returncode == 128 + signum, err[-3000:]
    assert err.strip().splitlines()[-1] == (
        f"interrupted: stopped by signal {signum} while the workers ran; they were stopped too, "
        f"and the same command resumes the sweep")
    assert job_processes(sweep_dir / "jobs") == []  # no worker, controller or shell is left
    assert all(RunDir(sweep_dir / name).holder() is None for name in NAMES)
    assert not any(finished(sweep_dir / name) for name in NAMES)


def test_slurm_jobs_are_stopped_by_scancel(tmp_path):
    env = fake_slurm(tmp_path)
    (tmp_path / "bin" / "scancel").write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path}/scancel\n")
    (tmp_path / "bin" / "scancel").chmod(stat.S_IRWXU)
    jobs = [submitit.SlurmJob(tmp_path / "jobs", f"4242_{i}") for i in range(2)]
    old = os.environ["PATH"]
    os.environ["PATH"] = env["PATH"]
    try:
        cluster.stop(jobs)
    finally:
        os.environ["PATH"] = old
    assert (tmp_path / "scancel").read_text().split() == ["4242_0", "4242_1"]


def fake_slurm(tmp_path):
    """``srun`` and ``sbatch`` stand-ins: sbatch keeps the script it is given."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scripts = {"srun": "#!/bin/sh\nexit 0\n",
               "sbatch": f"#!/bin/sh\ncp \"$1\" {tmp_path}/submitted.sh\n"
                         "echo 'Submitted batch job 4242'\n"}
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(stat.S_IRWXU)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


def sweep_command(env, *flags):
    """``experiments.sweep`` on the three points with ``flags``, in environment ``env``."""
    env = {**env, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-m", "experiments.sweep", *FLAGS, *flags],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_slurm_launcher_submits_a_job_array(tmp_path):
    out = sweep_command(fake_slurm(tmp_path), f"--sweep_dir={tmp_path / 'sweep'}",
                        "--launcher=slurm", "--workers=3", "--slurm.partition=gpu",
                        "--slurm.gpus_per_node=2", "--slurm.timeout_min=90",
                        "--slurm.setup=('module load cuda',)")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "submitted 3 worker(s) to slurm: job(s) 4242_0 4242_1 4242_2" in out.stderr
    assert "--status" in out.stdout
    script = (tmp_path / "submitted.sh").read_text()
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=2", "#SBATCH --time=90",
                 "#SBATCH --array=0-2%3", "#SBATCH --signal=USR2@90", "module load cuda"):
        assert line in script
    assert (tmp_path / "sweep" / "sweep.json").exists()  # claimed before submitting


@pytest.mark.slow
def test_bad_launches_stop_before_anything_is_submitted(tmp_path):
    env = {**os.environ, "PATH": os.path.dirname(sys.executable)}  # no srun here
    out = sweep_command(env, f"--sweep_dir={tmp_path / 'sweep'}", "--launcher=slurm")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith(
        'error: cannot submit the workers to slurm: Could not detect "srun"')
    slurm = cluster.slurm_config()
    slurm.timeout_min = 0
    for kwargs, message in (({"launcher": "local", "workers": 0}, r"^workers: must be an "
                             r"integer >= 1, got 0$"),
                            ({"launcher": "slurm", "workers": 1, "slurm": slurm},
                             r"^slurm\.timeout_min: must be an integer >= 1, got 0$")):
        with pytest.raises(ConfigError, match=message):
            cluster.launch(three_points(), tmp_path / "other", **kwargs)
    assert not (tmp_path / "other").exists()


def snapshot(root):
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


class KilledError(Exception):
    """Stands in for a kill."""


@pytest.mark.slow
def test_status_of_a_half_finished_sweep(tmp_path, monkeypatch):
    original = driver.Run._level_start

    def stop_width_8(self, level, previous, timer):  # width=8 is killed after two levels
        if self.exp.config.model.hidden[0] == 8 and level == 2:
            raise KilledError
        return original(self, level, previous, timer)

    c = three_points()
    c.sweep.width = (4, 8)
    monkeypatch.setattr(driver.Run, "_level_start", stop_width_8)
    with pytest.raises(KilledError):
        sweep.run_sweep(c, tmp_path)
    running = RunDir(tmp_path / "width=12")
    c.sweep.width = (4, 8, 12, 16)
    running.claim(sweep.points(c)[2].config)
    with running.locked():  # width=12 is being trained by this process
        running.status.write_text(json.dumps({"level": 1, "last_level": 3, "epoch": 1,
                                              "epochs": 2, "updated": "2026-01-01T00:00:00"}))
        before = snapshot(tmp_path)
        statuses = sweep.sweep_status(c, tmp_path)
        out = sweep_command(os.environ, f"--sweep_dir={tmp_path}", "--config.sweep.width="
                            "(4,8,12,16)", "--status")
        assert snapshot(tmp_path) == before  # read only
    assert [(s.name, s.state) for s in statuses] == [
        ("width=4", "finished"), ("width=8", "unfinished"), ("width=12", "running"),
        ("width=16", "not started")]
    assert statuses[0].detail.startswith("4 levels, ")
    assert statuses[1].detail.startswith("2 levels done, no worker on it")
    assert statuses[2].detail.startswith(f"level 1/3 epoch 1/2, by pid {os.getpid()} on ")
    assert statuses[3].detail == ""
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    expected = sweep.format_status(tmp_path, statuses).splitlines()
    assert [lines[i] for i in (0, 1, 3, 4)] == [expected[i] for i in (0, 1, 3, 4)]
    assert lines[2].startswith("width=12  running      level 1/3 epoch 1/2, by pid")
    assert lines[-1] == (f"sweep {tmp_path}: 4 points: 1 finished, 1 running, 1 unfinished, "
                         f"1 not started")
