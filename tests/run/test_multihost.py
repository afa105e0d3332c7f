"""Two processes on one machine, as two hosts of one run, give a single process's results."""

import json
import os
import socket
import subprocess
import sys

import pytest

from tests.helpers import ROOT, TINY_MIXTURE

ARGS = ["--config=configs/mixture_linear.py:smoke", *TINY_MIXTURE]
pytestmark = pytest.mark.slow  # runs in two subprocesses


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def rows(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_match_one(tmp_path, tiny_finished_run):
    port = free_port()
    env = {"PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    procs = [subprocess.Popen(
        [sys.executable, "-m", "experiments.run", *ARGS, f"--workdir={tmp_path / 'two'}",
         f"--coordinator_address=localhost:{port}", "--num_processes=2", f"--process_id={i}"],
        cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    single, multi = rows(tiny_finished_run), rows(tmp_path / "two")  # one process, same config
    assert [(r["level"], r["replicate"]) for r in multi] == [
        (r["level"], r["replicate"]) for r in single]  # written once, by process 0
    for a, b in zip(single, multi, strict=True):
        assert a["remaining_weights"] == b["remaining_weights"]
        for key in ("train_loss", "test_error", "test_ece_15", "true_abs_error"):
            assert a[key] == pytest.approx(b[key], abs=1e-4), key
