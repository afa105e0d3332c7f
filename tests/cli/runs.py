"""What the command-line tests share: the tiny run's command and its levels, and the checks of a
run directory and of an error line, and the damages done to a copy of the tiny run."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.helpers import TINY_MIXTURE

MIXTURE = ["--config=configs/mixture_linear.py:smoke", *TINY_MIXTURE]
LAST = 3  # the tiny run's last level (the smoke config's imp.levels)
PROGRESS = LAST * (3 * 5 + 1) + 10  # its last in-level checkpoint: level 3, step 10 of 15
# Runs experiments.run under a resource limit: python -c LIMITED RLIMIT_NAME VALUE ARGS... (set
# in the child before exec: a fork of the test process, which runs JAX, could deadlock).
LIMITED = ("import os, resource, sys; limit = getattr(resource, sys.argv.pop(1)); "
           "n = int(sys.argv.pop(1)); resource.setrlimit(limit, (n, n)); "
           "os.execv(sys.executable, [sys.executable, '-m', 'experiments.run', *sys.argv[1:]])")


# What every start of a trainer changes: its lock, its log and where it stands.
RUN_STATE = (".lock", "log.txt", "status.json")


def digests(workdir: Path) -> dict[str, str]:
    """Every file of a run directory but its figures and run-state files, by path (or the file
    where it should be): what must stay intact."""
    files = [workdir] if workdir.is_file() else sorted(workdir.rglob("*"))
    return {str(p.relative_to(workdir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in files if p.is_file() and "plots" not in p.parts
            and str(p.relative_to(workdir)) not in RUN_STATE}


def rows(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def without_timing(rs: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith("time_")} for r in rs]


def error_line(out: subprocess.CompletedProcess) -> str:
    """The one ``error:`` line of a failed run, checked to be its last line of stderr."""
    assert out.returncode == 2, (out.returncode, out.stderr[-3000:])
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    lines = out.stderr.strip().splitlines()
    assert [line for line in lines if line.startswith("error:")] == lines[-1:], lines[-5:]
    return lines[-1]


def corrupt(relative: str, how: str) -> Callable[[Path], None]:
    """Truncates to half, overwrites with garbage, or deletes every file matching ``relative``."""
    def corrupt(workdir: Path) -> None:
        paths = sorted(workdir.glob(relative))
        assert paths, relative
        for p in paths:
            if how == "delete":
                p.unlink()
            else:
                p.write_bytes(p.read_bytes()[: p.stat().st_size // 2] if how == "truncate"
                              else b"\x00garbage\xff" * 8)
    return corrupt


def unfinish(workdir: Path) -> None:
    """Makes the run look killed during its last level, after that level's step-10 checkpoint:
    the level's own checkpoint and rows gone."""
    shutil.rmtree(workdir / "checkpoints" / "levels" / str(LAST))
    lines = (workdir / "metrics.jsonl").read_text().splitlines(keepends=True)
    (workdir / "metrics.jsonl").write_text("".join(lines[:-2]))


def edit_config(section: str, field: str, value: object) -> Callable[[Path], None]:
    def edit(workdir: Path) -> None:
        config = json.loads((workdir / "config.json").read_text())
        config[section][field] = value
        (workdir / "config.json").write_text(json.dumps(config))
    return edit
