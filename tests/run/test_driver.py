"""End-to-end tests of the IMP driver on a tiny Gaussian-mixture task (in-process)."""

import dataclasses
import json
import logging
import math
import os
import shutil
import signal

import chex
import jax
import numpy as np
import pytest

from experiments.harness import soak
from imp_jax.run import driver
from imp_jax.run.checkpoints import Checkpoints
from imp_jax.run.rundir import RunDirError
from tests.helpers import results, tiny_config


@pytest.fixture(scope="module")
def experiment():
    return driver.build(tiny_config())


def run(experiment, workdir):
    runner = driver.Run(experiment.config, str(workdir), experiment)
    try:
        return runner.run()
    finally:
        runner.ckpt.close()


def final_state(experiment, workdir, level):
    runner = driver.Run(experiment.config, str(workdir), experiment)
    state, _ = Checkpoints.restore(runner.ckpt.levels, level, runner.target)
    runner.ckpt.close()
    return state


@pytest.fixture(scope="module")
def reference(experiment, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("reference")
    summary = run(experiment, workdir)
    return workdir, summary


def test_run_directory_and_rows(reference):
    workdir, summary = reference
    assert {p.name for p in workdir.iterdir()} >= {"config.json", "metrics.jsonl",
                                                    "summary.json", "checkpoints"}
    rows = results(workdir)
    assert [(r["level"], r["replicate"]) for r in rows] == [(lv, r) for lv in range(4)
                                                            for r in range(2)]
    total = rows[0]["total_weights"]
    assert total == 10 * 8 + 8 * 2  # kernel weights only, no biases
    expected = total
    for level in range(4):
        assert all(r["remaining_weights"] == expected for r in rows if r["level"] == level)
        expected -= math.ceil(0.2 * expected)
    for r in rows:
        assert 0 <= r["test_error"] <= 1 and r["train_loss"] > 0
        assert math.isfinite(r["test_ece_15"]) and math.isfinite(r["test_noisy_ece_15"])
    assert summary["finished"] and summary["levels_done"] == 4
    assert json.loads((workdir / "summary.json").read_text()) == summary


def test_rerun_of_finished_run_changes_nothing(experiment, reference):
    workdir, summary = reference
    before = (workdir / "metrics.jsonl").read_text()
    assert run(experiment, workdir) == summary
    assert (workdir / "metrics.jsonl").read_text() == before


def test_more_levels_extend_a_finished_run(experiment, reference, tmp_path):
    workdir, _ = reference
    base = tmp_path / "extended"
    shutil.copytree(workdir, base)
    more = driver.build(tiny_config(**{"imp.levels": 4}))
    run(more, base)
    rows = results(base)
    assert rows[:8] == results(workdir) and [r["level"] for r in rows[8:]] == [4, 4]


def test_other_config_is_refused(reference):
    workdir, _ = reference
    with pytest.raises(RunDirError, match=r"different config \(train.lr: 0.1 -> 0.05\)"):
        driver.Run(tiny_config(**{"train.lr": 0.05}), str(workdir))


class KilledError(Exception):
    """Stands in for a kill at a chosen point."""


@pytest.mark.parametrize("where", ["mid_level", "after_level_checkpoint", "between_levels"])
def test_resume_equals_uninterrupted(experiment, reference, tmp_path, monkeypatch, where):
    ref_dir, _ = reference
    original_save = Checkpoints.save
    original_start = driver.Run._level_start

    def save(manager, index, state, meta):
        original_save(manager, index, state, meta)
        if where == "mid_level" and meta.get("level") == 2 and meta.get("step") == 16:
            raise KilledError
        if where == "after_level_checkpoint" and manager.directory.name == "levels" \
                and index == 1:
            raise KilledError

    def level_start(self, level, previous, timer):
        if where == "between_levels" and level == 2:
            raise KilledError
        return original_start(self, level, previous, timer)

    monkeypatch.setattr(Checkpoints, "save", staticmethod(save))
    monkeypatch.setattr(driver.Run, "_level_start", level_start)
    with pytest.raises(KilledError):
        run(experiment, tmp_path)
    monkeypatch.undo()
    run(experiment, tmp_path)
    assert results(tmp_path) == results(ref_dir)
    chex.assert_trees_all_equal(final_state(experiment, tmp_path, 3),
                                final_state(experiment, ref_dir, 3))


@pytest.mark.slow
def test_later_levels_do_not_recompile(tmp_path, monkeypatch):
    # A model shape no other test uses, so that levels 0 and 1 really compile.
    experiment = driver.build(tiny_config(**{"model.hidden": (9,)}))
    compiles = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, *_, **__: compiles.append(1)
        if event == "/jax/core/compile/backend_compile_duration" else None)
    at_record = []
    original = driver.Run._record

    def record(self, level, state, seconds, resumed=False):
        original(self, level, state, seconds, resumed)
        at_record.append(len(compiles))

    monkeypatch.setattr(driver.Run, "_record", record)
    run(experiment, tmp_path)
    assert len(at_record) == 4 and at_record[0] > 0
    assert at_record[1] == at_record[2] == at_record[3], at_record  # levels 2, 3: no compile


@pytest.mark.slow
def test_stop_on_min_weights(tmp_path):
    exp = driver.build(tiny_config(**{"imp.levels": 50, "imp.min_weights": 40}))
    summary = run(exp, tmp_path)
    rows = results(tmp_path)
    assert summary["finished"]
    assert min(r["prunable_remaining"] for r in rows) >= 40
    last = min(r["prunable_remaining"] for r in rows)
    assert last - math.ceil(0.2 * last) < 40


def test_openlth_count_levels_and_stop(tmp_path, caplog):
    """The reference count over a 10-8-2 network whose 16 output weights are kept: every level
    goes R -> R - ceil(0.2 R) - 1, until the count asks for more than the 80 prunable ones."""
    exp = driver.build(tiny_config(**{"imp.levels": 50, "prune.count": "openlth",
                                   "prune.exclude": ("^output/",), "train.epochs": 1}))
    with caplog.at_level("INFO", logger=driver.__name__):
        summary = run(exp, tmp_path)
    counts = [r["remaining_weights"] for r in results(tmp_path)[::2]]
    expected = [96]
    while (expected[-1] + 4) // 5 + 1 <= expected[-1] - 16:
        expected.append(expected[-1] - (expected[-1] + 4) // 5 - 1)
    assert counts == expected == [96, 75, 59, 46, 35, 27, 20]
    assert summary["finished"]
    assert "the next level would prune 5 weights (prune.count='openlth') and only 4 " \
           "prunable weights remain" in caplog.text


def test_rewind_to_iteration_saves_that_point(tmp_path):
    exp = driver.build(tiny_config(**{"imp.rewind": "10it", "imp.levels": 1}))
    run(exp, tmp_path)
    runner = driver.Run(exp.config, str(tmp_path), exp)
    assert runner.ckpt.rewind.all_steps() == [10]
    point, meta = Checkpoints.restore(runner.ckpt.rewind, 10, runner.target)
    runner.ckpt.close()
    assert meta["step"] == 10 and np.all(np.asarray(point.step) == 10)


@pytest.mark.slow
def test_controls_keep_the_sparsity_but_change_the_weights(reference, tmp_path):
    """Random re-initialisation and random pruning: same sparsity as the IMP ticket, other
    weights."""
    ref_dir, _ = reference
    ticket = final_state(driver.build(tiny_config()), ref_dir, 3)
    kernel = lambda s: np.asarray(s.params["hidden_0"]["kernel"])  # noqa: E731
    mask = lambda s: np.concatenate(  # noqa: E731
        [np.asarray(m).ravel() for m in jax.tree_util.tree_leaves(s.masks)])
    for name, overrides in (("reinit", {"imp.reinit": True}),
                            ("random", {"prune.method": "random_global"})):
        exp = driver.build(tiny_config(**overrides))
        run(exp, tmp_path / name)
        control = final_state(exp, tmp_path / name, 3)
        assert results(tmp_path / name)[-1]["remaining_weights"] == results(ref_dir)[-1][
            "remaining_weights"]
        assert mask(control).sum() == mask(ticket).sum()
        assert not np.array_equal(kernel(control), kernel(ticket))
        if name == "random":
            assert not np.array_equal(mask(control), mask(ticket))


def test_divergence_stops_with_level_and_step(tmp_path):
    exp = driver.build(tiny_config(**{"train.lr": 1e30}))
    with pytest.raises(driver.TrainingDivergedError,
                       match=r"level 0: the training loss became NaN or infinite \(replicate 0 "
                             r"at step \d+, replicate 1 at step \d+\)"):
        run(exp, tmp_path)


def test_skip_replicate_marks_rows_and_summary(experiment, tmp_path, monkeypatch):
    """A replicate that diverges at level 1 is skipped from then on; the others go on."""
    config = tiny_config(**{"train.on_divergence": "skip_replicate"})
    exp = dataclasses.replace(experiment, config=config)
    original = driver._diverged

    def check(exp, level, stats, diverged, root):
        if level == 1:  # pretend replicate 1 produced a NaN loss at step 3
            stats = {**stats, "first_nonfinite_step": np.array([-1, 3])}
        return original(exp, level, stats, diverged, root)

    monkeypatch.setattr(driver, "_diverged", check)
    summary = run(exp, tmp_path)
    rows = results(tmp_path)
    assert [r["diverged"] for r in rows if r["replicate"] == 1] == [False, True, True, True]
    assert not any(r["diverged"] for r in rows if r["replicate"] == 0)
    assert summary["skipped_replicates"] == [1] and summary["replicates"] == 1


def test_run_directory_of_an_older_version_still_opens(experiment, reference, tmp_path):
    """A config.json written before fields were added gets today's defaults for them."""
    ref_dir, summary = reference
    old = tmp_path / "old"
    shutil.copytree(ref_dir, old)
    stored = json.loads((old / "config.json").read_text())
    del stored["parallel"], stored["train"]["on_divergence"]
    (old / "config.json").write_text(json.dumps(stored))
    runner = driver.open_run(str(old))
    assert runner.exp.config.parallel.mode == "batch"
    assert runner.exp.config.model.hidden == (8,)
    runner.ckpt.close()
    assert run(experiment, old) == summary  # and the run is recognised as finished


@pytest.mark.slow
def test_sigterm_mid_level_says_where_it_resumes(experiment, reference, tmp_path, monkeypatch,
                                                 caplog):
    original = driver.Progress.epoch_end

    def epoch_end(self, level, epoch, losses, lr):
        original(self, level, epoch, losses, lr)
        if level == 1 and epoch == 2:  # seen after the next epoch, which is checkpointed
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(driver.Progress, "epoch_end", epoch_end)
    caplog.set_level(logging.INFO)  # as the command line logs
    with pytest.raises(driver.RunInterruptedError, match="at level 1, epoch 3 "):
        run(experiment, tmp_path)
    monkeypatch.undo()
    status = json.loads((tmp_path / "status.json").read_text())
    assert (status["state"], status["level"], status["epoch"]) == ("interrupted", 1, 3)
    assert driver.plan(experiment.config, str(tmp_path)) == (
        "would resume at level 1, epoch 3, after 1 finished level(s)")
    log = (tmp_path / "log.txt").read_text()
    assert f"run directory: {tmp_path}" in log
    assert [line for line in log.splitlines() if "ERROR" in line] == []
    assert any(line.split(" ", 2)[2].startswith("interrupted: stopped by signal 15")
               for line in log.splitlines())
    caplog.clear()
    run(experiment, tmp_path)
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("level 1: resuming at epoch 3 (step ") for m in messages)
    # The mixture's level line holds the uncertainty quantities.
    assert any(m.startswith("level  2/3 | weights") and "| noisy ECE " in m
               and "| |p - p_true| " in m for m in messages)
    assert results(tmp_path) == results(reference[0])
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["state"] == "finished" and status["level_finished"] and status["level"] == 3


@pytest.mark.slow
def test_stop_after_minimum_stops_that_many_levels_past_the_best(tmp_path, monkeypatch,
                                                                  caplog):
    """The driver stops where ``analysis.levels_past_best`` says the best pruned model lies
    ``imp.stop_after_minimum`` levels back (here: level 1 is the best once level 2 exists), and a
    rerun finds the run finished."""
    def fake(rows):
        last = max(r["level"] for r in rows)
        return None if last < 2 else (1, last - 1)

    monkeypatch.setattr(driver.analysis, "levels_past_best", fake)
    config = tiny_config(**{"imp.levels": 8, "imp.stop_after_minimum": 2})
    exp = driver.build(config)
    with caplog.at_level(logging.INFO, logger=driver.__name__):
        summary = run(exp, tmp_path)
    assert summary["finished"] and summary["levels_done"] == 4  # levels 0..3
    assert "2 level(s) past the best pruned model (level 1" in caplog.text
    assert run(exp, tmp_path)["levels_done"] == 4
    assert driver.plan(config, str(tmp_path)).startswith("is finished (4 levels)")
    # Raised, the stop lets the same run go on.
    config.imp.stop_after_minimum = 3
    assert run(driver.build(config), tmp_path)["levels_done"] == 5


def test_levels_past_best_reads_the_mean_test_error():
    from imp_jax.core import analysis

    rows = [{"level": i, "replicate": r, "remaining_weights": 100 - 10 * i, "test_error": e}
            for i, e in enumerate([0.2, 0.3, 0.1, 0.15, 0.4]) for r in range(2)]
    assert analysis.levels_past_best(rows) == (2, 2)
    assert analysis.levels_past_best(rows[:6]) is None  # not yet risen after the minimum


@pytest.mark.slow
def test_a_missing_level_and_a_damaged_rewind_point_are_made_again(tmp_path, caplog):
    exp = driver.build(tiny_config(**{"imp.rewind": "10it", "imp.levels": 2}))
    reference, damaged = tmp_path / "reference", tmp_path / "damaged"
    run(exp, reference)
    shutil.copytree(reference, damaged)
    for name in ("levels/2", "progress"):  # the last level, and its in-level checkpoint
        shutil.rmtree(damaged / "checkpoints" / name)
    for part in (damaged / "checkpoints" / "rewind" / "10" / "state" / "d").iterdir():
        part.write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING, logger=driver.__name__):
        run(exp, damaged)
    assert (f"checkpoint {damaged}/checkpoints/levels/2 is missing; training level 2 again (its "
            f"metrics rows are kept)") in caplog.text
    assert (f"checkpoint {damaged}/checkpoints/rewind/10 is unreadable (" in caplog.text
            and "; making the rewind point again (level 0 to step 10)" in caplog.text)
    assert (damaged / "metrics.jsonl").read_text() == (reference / "metrics.jsonl").read_text()
    assert soak.compare(reference, damaged).ok  # the same masks and weights, bitwise
