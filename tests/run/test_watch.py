"""Watching a run: TensorBoard event files, log.txt, status.json, progress lines with the time
left, --print_config, and reports that read without writing."""

from __future__ import annotations

import hashlib
import json
import logging
import struct
from pathlib import Path

import pytest
from tensorboardX.proto import event_pb2

from imp_jax.run import logs
from imp_jax.run.progress import Progress
from tests.helpers import TINY_MIXTURE, run_cli

MIXTURE = ["--config=configs/mixture_linear.py:smoke", *TINY_MIXTURE]


def read_scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the event files in ``logdir``: tag -> [(step, value), ...] (the TFRecord
    framing: length, its CRC, the Event proto, its CRC)."""
    out: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(logdir.glob("events.out.tfevents.*")):
        data, i = path.read_bytes(), 0
        while i < len(data):
            (n,) = struct.unpack("<Q", data[i:i + 8])
            event = event_pb2.Event.FromString(data[i + 12:i + 12 + n])
            i += 12 + n + 4
            for value in event.summary.value:
                out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out


def tree_digests(workdir: Path, skip: str = "plots") -> dict[str, str]:
    return {str(p.relative_to(workdir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(workdir.rglob("*")) if p.is_file() and skip not in p.parts}


@pytest.fixture(scope="module")
def finished(tiny_finished_run: Path) -> Path:
    return tiny_finished_run


def test_event_files_hold_the_epoch_and_level_curves(finished: Path) -> None:
    rows = [json.loads(line) for line in (finished / "metrics.jsonl").read_text().splitlines()]
    for replicate in (0, 1):
        scalars = read_scalars(finished / "tb" / f"replicate_{replicate}")
        # Each level a TensorBoard run of its own, with the same tags: one chart per curve.
        levels = {level: read_scalars(finished / "tb" / f"level_{level:02d}" /
                                      f"replicate_{replicate}") for level in range(4)}
        assert all(set(levels[level]) == set(levels[0]) for level in levels)
        assert [step for step, _ in levels[0]["train_loss"]] == [1, 2, 3]
        assert {s for s, _ in levels[3]["learning_rate"]} == {1, 2, 3}
        assert [step for step, _ in levels[2]["seconds_per_epoch"]] == [2, 3]
        mine = [r for r in rows if r["replicate"] == replicate]
        for name in ("test_error", "test_ece_15", "test_noisy_ece_15",
                     "train_error_noisy_subset", "remaining_weights"):
            assert scalars[f"levels/{name}"] == [
                (r["level"], pytest.approx(r[name], rel=1e-6)) for r in mine]


def test_log_file_and_status(finished: Path) -> None:
    log = (finished / "log.txt").read_text().splitlines()
    # Everything the console showed: the run directory, every level, the result, the figures.
    messages = [line.split(" ", 2)[2] for line in log]
    assert f"run directory: {finished}" in messages
    workdir = Path("runs") / finished.name  # the default run directory, as the command named it
    assert any("level  3/3 | weights 48/96" in line and "relabelled err" in line for line in log)
    assert any(m.startswith(("best pruned level ", "no best pruned model yet")) for m in messages)
    assert any(m.startswith(f"{workdir}: wrote 12 figure files") for m in messages)
    status = json.loads((finished / "status.json").read_text())
    assert status["state"] == "finished" and status["level"] == status["last_level"] == 3
    assert status["level_finished"]
    again = run_cli(*MIXTURE, f"--workdir={finished}")  # appended to, across starts
    assert again.returncode == 0 and "is finished" in again.stderr
    longer = (finished / "log.txt").read_text().splitlines()
    assert longer[:len(log)] == log and any("is finished" in line for line in longer[len(log):])


def test_print_config_writes_nothing(finished: Path, tmp_path: Path) -> None:
    new = tmp_path / "new"
    out = run_cli(*MIXTURE, "--config.model.hidden=(8,)", "--config.model.hidden=(16,)",
                  f"--workdir={new}", "--print_config")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "model.hidden" in out.stdout and "(16,)" in out.stdout and "(8, 16)" not in out.stdout
    assert "# FCN: hidden widths" in out.stdout
    assert f"{new} would start a new run" in out.stdout and not new.exists()
    before = tree_digests(finished, skip="nothing")
    out = run_cli(*MIXTURE, f"--workdir={finished}", "--print_config")
    assert out.returncode == 0 and "is finished (4 levels)" in out.stdout
    assert tree_digests(finished, skip="nothing") == before


@pytest.mark.slow
def test_report_reads_and_writes_only_figures_and_its_csv(finished: Path, tmp_path: Path) -> None:
    before = tree_digests(finished)
    csv_path = tmp_path / "table.csv"
    out = run_cli(str(finished), f"--csv={csv_path}", module="experiments.report")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "the figures are up to date" in out.stderr  # drawn at the end of the run
    assert tree_digests(finished) == before and csv_path.is_file()
    figures = {p: p.stat().st_mtime_ns for p in (finished / "plots").iterdir()}
    out = run_cli(str(finished), f"--csv={csv_path}", "--redraw", module="experiments.report")
    assert out.returncode == 0 and "wrote 12 figure files" in out.stderr
    assert all(p.stat().st_mtime_ns > t for p, t in figures.items())
    assert tree_digests(finished) == before


def test_progress_lines_exclude_compilation_and_give_the_time_left(caplog) -> None:
    now = [0.0]
    progress = Progress(last_level=2, epochs=10, every_epochs=0, every_seconds=5.0,
                        clock=lambda: now[0])
    progress.start_level(1, 0)
    losses = [0.5, 0.7]
    with caplog.at_level(logging.INFO, logger="imp_jax.run.driver"):
        now[0] = 30.0  # the first epoch compiles
        progress.epoch_end(1, 1, losses, 0.1)
        for epoch in range(2, 5):
            now[0] += 2.0
            progress.epoch_end(1, epoch, losses, 0.1)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "level 1/2 epoch 1/10 loss 0.6000 first epoch, with compilation"
    # 2 s an epoch from epoch 2 on: 6 epochs left in level 1, then 10 epochs of level 2.
    assert lines[-1] == ("level 1/2 epoch 4/10 loss 0.6000 2.000 s/epoch, level ETA 12 s, "
                         "run ETA 32 s")
    assert progress.eta(1, 4) == (12.0, 32.0)
    # The next level reuses the compiled steps: its first epoch has the last level's rate.
    progress.start_level(2, 0)
    with caplog.at_level(logging.INFO, logger="imp_jax.run.driver"):
        now[0] += 100.0
        progress.epoch_end(2, 1, losses, 0.1)
    assert caplog.records[-1].getMessage() == (
        "level 2/2 epoch 1/10 loss 0.6000 2.000 s/epoch, level ETA 18 s, run ETA 18 s")


def test_cli_logging_keeps_user_records_and_tags_warnings() -> None:
    def record(name: str, level: int, path: str = "/home/user/mine.py") -> logging.LogRecord:
        return logging.LogRecord(name, level, path, 1, "hello", (), None)

    assert logs.keep(record("absl", logging.INFO))  # the user's own absl.logging.info
    assert not logs.keep(record("absl", logging.INFO, "/x/tensorflow_datasets/core/a.py"))
    assert not logs.keep(record("orbax.checkpoint", logging.INFO))
    assert logs.keep(record("orbax.checkpoint", logging.WARNING))
    formatter = logs.Formatter()
    assert formatter.format(record("x", logging.WARNING)).endswith(" WARNING: hello")
    assert formatter.format(record("x", logging.INFO))[8:] == " hello"

