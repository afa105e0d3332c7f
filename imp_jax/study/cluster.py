"""Sweep workers as cluster jobs, through submitit.

:func:`launch` claims a sweep directory, then submits ``workers`` jobs (a SLURM job array, or
processes on this machine) that each run :func:`imp_jax.study.sweep.run_sweep` on it: the workers
divide the points between them through the points' run-directory locks (see ``run_sweep``), so any
number of them, started in any way, is safe. Each job writes its logs under ``<sweep_dir>/jobs/``
(``<job id>_0_log.err``, ...). A job is a :class:`SweepWorker`, which submitit's checkpoint hook
requeues when SLURM preempts it or its time runs out; the requeued worker resumes its point from
the point's last checkpoint. :func:`wait` waits for local jobs; a SIGTERM/SIGINT then stops them and
their workers for real (:func:`stop`; SLURM jobs by ``scancel``).

Launcher settings (``--slurm.<field>`` on ``experiments.sweep``) are a ConfigDict,
:func:`slurm_config`, checked by :func:`check_slurm` before anything is submitted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import ml_collections
import submitit
import submitit.local.local

from imp_jax.run import driver, logs, signals
from imp_jax.run.config import ConfigError
from imp_jax.study import sweep

log = logging.getLogger(__name__)

LAUNCHERS = ("local", "slurm")
JOBS = "jobs"  # the jobs' logs and submission files, inside the sweep directory
# Local jobs end only with their work: submitit's local executor would stop them after 2 min.
LOCAL_TIMEOUT_MIN = 60 * 24 * 365


class LaunchError(RuntimeError):
    """The workers could not be submitted, or one of them failed."""


def slurm_config() -> ml_collections.ConfigDict:
    """The SLURM settings of the workers' jobs, with their defaults."""
    return ml_collections.ConfigDict({
        "partition": "",       # the cluster's default partition when empty
        "account": "",
        "qos": "",
        "constraint": "",      # e.g. "a100"
        "gpus_per_node": 1,    # per worker: one run uses every device its job is given
        "cpus_per_task": 8,
        "mem_gb": 0,           # the partition's default when 0
        "timeout_min": 24 * 60,  # a job's time limit; it is requeued when it runs out
        "setup": (),           # shell lines run before the worker, e.g. ("module load cuda",)
    })


def check_slurm(slurm: ml_collections.ConfigDict) -> None:
    """Raises ConfigError naming the first ``slurm.<field>`` with a bad value."""
    for field in ("partition", "account", "qos", "constraint"):
        if not isinstance(slurm[field], str):
            raise ConfigError(f"slurm.{field}: must be a string, got {slurm[field]!r}")
    for field, low in (("gpus_per_node", 0), ("cpus_per_task", 1), ("mem_gb", 0),
                       ("timeout_min", 1)):
        if not isinstance(slurm[field], int) or slurm[field] < low:
            raise ConfigError(f"slurm.{field}: must be an integer >= {low}, got "
                              f"{slurm[field]!r}")
    if not all(isinstance(line, str) for line in slurm.setup):
        raise ConfigError(f"slurm.setup: must be a tuple of shell lines, got {slurm.setup!r}")


class SweepWorker(submitit.helpers.Checkpointable):
    """A job's work: run the points that no other worker holds, sweep after sweep (picklable).

    Given several sweeps, a worker passes to the next one as soon as every point of the current
    one is finished or held by another worker, so workers of a study share out all its points
    rather than waiting for a sweep's slowest point. As a ``Checkpointable``, submitit requeues
    it with the same arguments on preemption or timeout; it then resumes its point from the
    point's last checkpoint.
    """

    def __init__(self, sweep_config: ml_collections.ConfigDict, sweep_dir: str,
                 more: tuple[tuple[ml_collections.ConfigDict, str], ...] = ()) -> None:
        self.sweeps = ((sweep_config, sweep_dir), *more)

    def __call__(self, worker: int) -> list[str]:
        """Runs worker number ``worker``; returns the names of the points finished when it
        stopped (``<sweep dir name>/<point>`` when it has several sweeps)."""
        logs.to_stderr()
        finished, total = [], 0
        for config, sweep_dir in self.sweeps:
            log.info("worker %d on sweep %s", worker, sweep_dir)
            sweep.run_sweep(config, sweep_dir)
            statuses = sweep.sweep_status(config, sweep_dir)
            prefix = f"{Path(sweep_dir).name}/" if len(self.sweeps) > 1 else ""
            finished += [prefix + s.name for s in statuses if s.state == "finished"]
            total += len(statuses)
        log.info("worker %d: nothing left for it; %d/%d points finished", worker, len(finished),
                 total)
        return finished


def _parameters(launcher: str, slurm: ml_collections.ConfigDict, workers: int,
                name: str) -> dict[str, Any]:
    if launcher == "local":
        # submitit hides the GPUs from local jobs unless told; they see what this process sees.
        devices = os.environ.get("CUDA_VISIBLE_DEVICES")
        keep = ("unset CUDA_VISIBLE_DEVICES" if devices is None else
                f"export CUDA_VISIBLE_DEVICES={shlex.quote(devices)}")
        return {"name": name, "timeout_min": LOCAL_TIMEOUT_MIN, "local_setup": [keep]}
    optional = {"slurm_partition": slurm.partition, "slurm_account": slurm.account,
                "slurm_qos": slurm.qos, "slurm_constraint": slurm.constraint,
                "mem_gb": slurm.mem_gb}
    return {"name": name, "timeout_min": slurm.timeout_min, "gpus_per_node": slurm.gpus_per_node,
            "cpus_per_task": slurm.cpus_per_task, "slurm_setup": list(slurm.setup),
            "slurm_array_parallelism": workers, **{k: v for k, v in optional.items() if v}}


def launch(sweep_config: ml_collections.ConfigDict, sweep_dir: str | Path, *, launcher: str,
           workers: int, slurm: ml_collections.ConfigDict | None = None,
           more: tuple[tuple[ml_collections.ConfigDict, str | Path], ...] = ()
           ) -> list[submitit.Job]:
    """Checks the sweep and claims ``sweep_dir``, then submits ``workers`` worker jobs.

    Args:
      sweep_config: a sweep config (see :mod:`imp_jax.study.sweep`).
      sweep_dir: the sweep directory the workers share.
      launcher: ``"slurm"`` (a job array) or ``"local"`` (processes on this machine).
      workers: how many jobs.
      slurm: the SLURM settings (:func:`slurm_config`); ignored by ``"local"``.
      more: further (sweep config, sweep directory) pairs the same workers run after the first
        (see :class:`SweepWorker`); each is checked and claimed before anything is submitted.

    Raises:
      ConfigError: a bad sweep, launcher, worker count or SLURM setting; nothing submitted.
      RunDirError: a sweep directory cannot hold its sweep.
      LaunchError: the submission failed (e.g. no SLURM on this machine).
    """
    slurm = slurm or slurm_config()
    if launcher not in LAUNCHERS:
        raise ConfigError(f"launcher: must be one of {LAUNCHERS}, got {launcher!r}")
    if not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers: must be an integer >= 1, got {workers!r}")
    check_slurm(slurm)
    sweeps = [(c, Path(d).resolve()) for c, d in ((sweep_config, sweep_dir), *more)]
    for config, root in sweeps:
        sweep.claim(root, config, sweep.points(config))
    root = sweeps[0][1]
    try:
        executor = submitit.AutoExecutor(folder=root / JOBS, cluster=launcher)
        executor.update_parameters(**_parameters(launcher, slurm, workers,
                                                 f"sweep-{sweep_config.name}"))
        worker = SweepWorker(sweep_config, str(root),
                             tuple((c, str(d)) for c, d in sweeps[1:]))
        jobs = executor.map_array(worker, range(workers))
    except (OSError, RuntimeError, subprocess.CalledProcessError) as e:
        raise LaunchError(f"cannot submit the workers to {launcher}: {e}") from e
    log.info("submitted %d worker(s) to %s: job(s) %s; logs in %s", workers, launcher,
             " ".join(j.job_id for j in jobs), root / JOBS)
    return jobs


# How long the workers of local jobs get to checkpoint their points and end before they are
# killed: a run honours a signal within imp_jax.run.signals' grace of 10 s.
STOP_GRACE_S = 20.0
_PROC = Path("/proc")


def _started(pid: int) -> str | None:
    """When process ``pid`` started (its start time in /proc), or None if it is gone or a
    zombie: with the pid, what tells a process from a later one given the same pid."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after the command, which may hold spaces
    return None if fields[0] == "Z" else fields[19]


def _tree(pid: int) -> dict[int, str]:
    """Process ``pid`` and all its descendants, with their start times (:func:`_started`)."""
    children: dict[int, list[int]] = {}
    for entry in _PROC.iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat[stat.rindex(")") + 2:].split()[1]), []).append(
                int(entry.name))
    found, todo = {}, [pid]
    while todo:
        p = todo.pop()
        if (start := _started(p)) is not None:
            found[p] = start
        todo += children.get(p, [])
    return found


def _signal(processes: dict[int, str], signum: int) -> None:
    """Sends ``signum`` to those of ``processes`` (pid: start time) that still run."""
    for pid, start in processes.items():
        if _started(pid) == start:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)


def _cmdline(pid: int) -> str:
    """The command line of process ``pid`` ("" if it is gone)."""
    try:
        return (_PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace")
    except OSError:
        return ""


def _stop_local(jobs: list[submitit.Job], grace_s: float = STOP_GRACE_S) -> None:
    """Stops local jobs for real. Each is a shell (submitit's ``/bin/sh -c "... && python -m
    submitit.local._local"``, which :func:`_parameters` asks for) above a job controller above
    the worker, and submitit's own cancel signals only the shell. Here the workers get SIGINT,
    which a run honours by checkpointing its point (submitit ignores SIGTERM in them); their
    controllers then end, and whatever of the jobs is left after ``grace_s`` is killed."""
    trees = {}
    for job in jobs:
        process = getattr(job, "_process", None)
        if process is not None:
            trees.update(_tree(process.pid))
    workers = {pid: start for pid, start in trees.items()
               if "submitit.core._submit" in _cmdline(pid)}
    _signal(workers or trees, signal.SIGINT)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_started(p) == s for p, s in trees.items()):
        for job in jobs:
            job.done()  # reaps the shell
        time.sleep(0.1)
    _signal(trees, signal.SIGKILL)
    for job in jobs:
        job.done()


def stop(jobs: list[submitit.Job]) -> None:
    """Stops ``jobs`` and their workers: local ones as :func:`_stop_local` does (where /proc
    shows the processes), SLURM ones by ``scancel``, as submitit cancels them."""
    local = [job for job in jobs if isinstance(job, submitit.local.local.LocalJob)]
    if local and _PROC.is_dir():
        _stop_local(local)
    else:
        local = []
    for job in jobs:
        if job not in local:
            job.cancel(check=False)


def wait(jobs: list[submitit.Job], poll_s: float = 1.0) -> None:
    """Waits for ``jobs`` to end; SIGTERM/SIGINT stop them (:func:`stop`; each worker
    checkpoints its point).

    Raises:
      LaunchError: a job failed (the message names its log).
      driver.RunInterruptedError: a signal stopped the wait and the jobs.
    """
    with signals.stop_on_signals() as stop_signal:
        if stop_signal is not None:  # time to stop the workers before the watchdog ends this
            stop_signal.extend_grace(STOP_GRACE_S + 10.0)
            stop_signal.where = "while stopping the workers"
        while not all(job.done() for job in jobs):
            if stop_signal is not None and stop_signal.signum is not None:
                stop(jobs)
                stop_signal.handled()
                raise driver.RunInterruptedError(
                    f"stopped by signal {stop_signal.signum} while the workers ran; they were "
                    f"stopped too, and the same command resumes the sweep", stop_signal.signum)
            time.sleep(poll_s)
    for job in jobs:
        error = job.exception()
        if error is not None:
            last = [line for line in str(error).splitlines() if line.strip()]
            raise LaunchError(f"worker job {job.job_id} failed: "
                              f"{last[-1].strip() if last else type(error).__name__}; "
                              f"its log: {job.paths.stderr}")
