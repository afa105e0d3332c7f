"""Bad inputs through the command line: each stops with one clear ``error:`` line on stderr and
leaves an existing run as it was; a torn metrics line and missing or unreadable checkpoints are
recovered from instead (levels and the rewind point trained again, to the same state), and the
advice of every message about them works when followed.

The run directories are copies of the session's tiny finished run. "Disk full" is
simulated in two ways that fail even for root (whom ``chmod`` does not stop): a run directory
whose path runs through a regular file (ENOTDIR), and a file-size limit (``RLIMIT_FSIZE``, which
root is subject to; Python then gets EFBIG) that a metrics append crosses in the middle of a run.
"""

from __future__ import annotations

import copy
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from experiments.harness import soak
from imp_jax.run import driver
from imp_jax.run.config import legacy_fingerprint, set_field
from imp_jax.run.rundir import RunDir
from tests.helpers import MNIST_ARCHIVES, ROOT, TINY_MIXTURE, run_cli

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


# -- the table ---------------------------------------------------------------------------------


def _corrupt(relative: str, how: str) -> Callable[[Path], None]:
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


def _write(relative: str, text: str) -> Callable[[Path], None]:
    def write(workdir: Path) -> None:
        (workdir / relative).write_text(text)
    return write


def _delete(relative: str) -> Callable[[Path], None]:
    def delete(workdir: Path) -> None:
        shutil.rmtree(workdir / relative)
    return delete


def _earlier_export(workdir: Path) -> None:
    Path(f"{workdir}.out").mkdir()
    Path(f"{workdir}.out/compact.npz").write_bytes(b"an earlier export")


def _make_file(workdir: Path) -> None:
    shutil.rmtree(workdir)
    workdir.write_text("a file")


def _garble_row(workdir: Path) -> None:
    lines = (workdir / "metrics.jsonl").read_text().splitlines(keepends=True)
    lines[2] = lines[2][:40] + "\n"
    (workdir / "metrics.jsonl").write_text("".join(lines))


def _unfinish(workdir: Path) -> None:
    """Makes the run look killed during its last level, after that level's step-10 checkpoint:
    the level's own checkpoint and rows gone."""
    shutil.rmtree(workdir / "checkpoints" / "levels" / str(LAST))
    lines = (workdir / "metrics.jsonl").read_text().splitlines(keepends=True)
    (workdir / "metrics.jsonl").write_text("".join(lines[:-2]))


def _garble_rewind(workdir: Path) -> None:
    """Killed before the last level's first in-level checkpoint (so the level starts from the
    rewind point), and the rewind point damaged."""
    _unfinish(workdir)
    shutil.rmtree(workdir / "checkpoints" / "progress" / str(PROGRESS))
    _corrupt("checkpoints/rewind/0/state/d/*", "garbage")(workdir)


def _edit_config(section: str, field: str, value: object) -> Callable[[Path], None]:
    def edit(workdir: Path) -> None:
        config = json.loads((workdir / "config.json").read_text())
        config[section][field] = value
        (workdir / "config.json").write_text(json.dumps(config))
    return edit


def _broken_config(workdir: Path) -> None:
    Path(f"{workdir}.broken.py").write_text("def get_config(:\n")


def _file_at_data_dir(workdir: Path) -> None:
    Path(f"{workdir}.file").write_text("a file where data_dir's parent should be")


def _truncated_archives(workdir: Path) -> None:
    archives = Path(f"{workdir}.archives")
    shutil.copytree(MNIST_ARCHIVES, archives)
    image = archives / "train-images-idx3-ubyte.gz"
    image.chmod(0o644)
    image.write_bytes(image.read_bytes()[:100_000])


@dataclasses.dataclass(frozen=True)
class Case:
    """One bad input: command-line flags, optionally a broken copy of the tiny run to point them
    at, and the text the error line must contain ({workdir} is filled in)."""

    name: str
    flags: tuple[str, ...]
    expect: str
    breaks: Callable[[Path], None] | None = None  # applied to a copy of the tiny run
    config: str = "--config=configs/mixture_linear.py:smoke"  # {workdir} is filled in; or none
    module: str = "experiments.run"  # others get the flags alone
    prepare: Callable[[Path], None] | None = None  # given the case's run directory path


CASES = [
    # Config values: type, range and names.
    Case("lr_not_a_number", ("--config.train.lr=abc",),
         "error: flag --config.train.lr=abc: could not convert string to float: 'abc'"),
    Case("lr_negative", ("--config.train.lr=-1",),
         "error: config.train.lr: must be in (0.0, inf), got -1.0"),
    Case("epochs_not_an_integer", ("--config.train.epochs=1.5",),
         "error: flag --config.train.epochs=1.5: invalid literal for int()"),
    Case("epochs_zero", ("--config.train.epochs=0",),
         "error: config.train.epochs: must be an integer >= 1, got 0"),
    Case("label_noise_above_one", ("--config.data.label_noise=1.5",),
         "error: config.data.label_noise: must be in [0.0, 1.0], got 1.5"),
    Case("prune_fraction_one", ("--config.prune.fraction=1.0",),
         "error: config.prune.fraction: must be in (0.0, 1.0), got 1.0"),
    Case("hidden_width_zero", ("--config.model.hidden=(8,0)",),
         "error: config.model.hidden: must be a non-empty tuple of positive integers"),
    Case("nesterov_not_a_bool", ("--config.train.nesterov=maybe",),
         "error: flag --config.train.nesterov=maybe: ('Non-boolean argument to boolean flag'"),
    Case("exclude_bad_regex", ('--config.prune.exclude=("[",)',),
         "error: config.prune.exclude: has an invalid regular expression '['"),
    Case("rewind_bad_syntax", ("--config.imp.rewind=5x",),
         'error: config.imp.rewind: must look like "0", "500it" (steps) or "10ep" (epochs)'),
    Case("rewind_after_training", ("--config.imp.rewind=3ep",),
         "error: config.imp.rewind: '3ep' is 15 steps, not before the end of training (15 steps)"),
    Case("unknown_model", ("--config.model.name=resnet99",),
         "error: config.model.name: must be one of"),
    Case("unknown_dataset", ("--config.data.name=cifar99",),
         "error: config.data.name: must be one of ('mnist', 'fashion_mnist'"),
    Case("unknown_field", ("--config.train.learning_rate=0.1",),
         "error: config.train.learning_rate: unknown field"),
    Case("unknown_section", ("--config.optim.lr=0.1",), "error: config.optim.lr: unknown field"),
    Case("missing_config_file", (), "error: [Errno 2] No such file or directory: "
         "'configs/nonexistent.py'", config="--config=configs/nonexistent.py"),
    Case("unknown_config_variant", (), "error: ValueError: unknown variant 'huge' of "
         "mixture_linear; expected 'smoke'", config="--config=configs/mixture_linear.py:huge"),
    # Checks that need the data.
    Case("batch_larger_than_dataset", ("--config.train.batch_size=1000",),
         "error: config.train.batch_size: 1000 is larger than the training set (500 examples)"),
    Case("subset_larger_than_dataset", ("--config.data.train_subset=600",),
         "error: config.data: train_subset=600 with validation_size=0 asks for more than the "
         "500 training examples of mixture_linear"),
    # Fashion-MNIST: the MNIST archives beside the project would be found.
    Case("missing_archives", ("--config.data.name=fashion_mnist",
                              "--config.data.manual_dir=/nonexistent",
                              "--config.data.data_dir={workdir}.tfds"),
         "error: config.data: dataset 'fashion_mnist' is not prepared in",
         config="--config=configs/mnist_noise.py:smoke"),
    # Run directories that cannot be used.
    Case("workdir_under_a_file", ("--workdir={workdir}/run",),
         "error: cannot write {workdir}/run/config.json: [Errno 20] Not a directory",
         breaks=_make_file),
    Case("workdir_is_a_file", (), "error: {workdir} is a file, not a run directory",
         breaks=_make_file),
    Case("workdir_not_a_run", (), "error: {workdir} is not empty and has no config.json",
         breaks=lambda w: (w / "config.json").unlink()),
    Case("another_configs_run", ("--config.train.lr=0.05",),
         "error: {workdir} holds a run of a different config (train.lr: 0.1 -> 0.05)",
         breaks=lambda workdir: None),
    Case("garbage_config_json", (), "error: {workdir}/config.json is unreadable",
         breaks=_write("config.json", "{not json")),
    Case("garbage_metrics_line", (), "error: {workdir}/metrics.jsonl: line 3 is not valid JSON",
         breaks=_garble_row),
    # Found later, each once a traceback or a misleading message.
    Case("exclude_everything", ('--config.prune.exclude=(".*",)',),
         "error: config.prune.exclude: ('.*',) excludes every prunable leaf"),
    Case("seed_too_large", (f"--config.seed={2**63}",),
         "error: config.seed: must be an integer >= 0 and <= 9223372036854775807"),
    Case("mixture_nu_huge", ("--config.data.mixture_nu=1e30",),
         "error: config.data.mixture_nu: must be in [0.0, 100.0], got 1e+30"),
    Case("config_json_null", (), "error: {workdir}/config.json is unreadable (it holds a NoneType",
         breaks=_write("config.json", "null")),
    Case("config_file_syntax_error", (), "error: the config file {workdir}.broken.py has a syntax "
         "error at line 1: invalid syntax",
         config="--config={workdir}.broken.py", prepare=_broken_config),
    Case("repeated_tuple_override_last_wins", ("--config.model.hidden=(8,)",
                                               "--config.model.hidden=(0,)"),
         "error: config.model.hidden: must be a non-empty tuple of positive integers, e.g. "
         "(300,), got (0,)"),
    Case("unwritable_data_dir", ("--config.data.manual_dir=" + str(MNIST_ARCHIVES),
                                 "--config.data.data_dir={workdir}.file/tfds"),
         "error: config.data: cannot read or write the dataset's files ([Errno 20] Not a "
         "directory", config="--config=configs/mnist_noise.py:smoke", prepare=_file_at_data_dir),
    Case("truncated_mnist_archive", ("--config.data.manual_dir={workdir}.archives",
                                     "--config.data.data_dir={workdir}.tfds"),
         "error: config.data: an archive of 'mnist' does not match the checksum "
         "tensorflow-datasets registers for it", config="--config=configs/mnist_noise.py:smoke",
         prepare=_truncated_archives),
    Case("sweep_override_unknown_field",
         ("--config=configs/mixture_linear_widths.py:smoke",
          "--config.sweep.overrides=(('width>4','train.rate',1.0),)", "--sweep_dir={workdir}"),
         "error: config.sweep.overrides[0]: 'train.rate' is not a config field",
         module="experiments.sweep"),
    # Reports.
    Case("report_csv_is_a_directory", ("{workdir}", "--csv={workdir}", "--noplots"),
         "error: cannot write {workdir}: it is a directory; give a file name",
         breaks=lambda workdir: None, module="experiments.report"),
    Case("report_csv_unwritable", ("{workdir}", "--csv={workdir}/config.json/out.csv",
                                   "--noplots"),
         "error: cannot write {workdir}/config.json/out.csv: [Errno 17] File exists",
         breaks=lambda workdir: None, module="experiments.report"),
    Case("report_after_hidden_edited", ("{workdir}", "--redraw"),
         "error: checkpoint {workdir}/checkpoints/levels/0 cannot be restored with the run's "
         "config.json (", breaks=_edit_config("model", "hidden", [9]),
         module="experiments.report"),
    Case("report_after_num_bins_edited", ("{workdir}", "--noplots"),
         "error: {workdir}: metric 'test_ece_10' is missing from the rows of level 0",
         breaks=_edit_config("eval", "num_bins", 10), module="experiments.report"),
    # Round three: many processes, upgrades, damaged checkpoints, and the smaller ones.
    Case("repeated_override_in_space_form_last_wins", ("--config.model.hidden", "(8,)",
                                                       "--config.model.hidden", "(0,)"),
         "error: config.model.hidden: must be a non-empty tuple of positive integers, e.g. "
         "(300,), got (0,)"),
    Case("override_without_a_config_file", ("--config.train.lr=0.05",),
         "error: --config.train.lr: give --config=configs/NAME.py[:ARG] to override its fields",
         config=""),
    Case("workdir_alone_holds_no_run", (),
         "error: {workdir} holds no run (no config.json); give --config=configs/NAME.py[:ARG]",
         config=""),
    Case("sweep_unknown_sweep_field",
         ("--config=configs/mixture_linear_widths.py:smoke", "--config.sweep.bogus=3",
          "--sweep_dir={workdir}"),
         "error: config.sweep.bogus: unknown field", module="experiments.sweep"),
    Case("sweep_unknown_sweep_field_without_a_config_file", ("--config.sweep.bogus=3",),
         "error: config.sweep.bogus: unknown field (and overrides need "
         "--config=configs/NAME.py[:ARG])", module="experiments.sweep"),
    Case("export_mistyped_run_directory", ("{workdir}-typo", "--out={workdir}.out"),
         "error: {workdir}-typo is not a run directory: it does not exist",
         module="experiments.export"),
    Case("export_best_before_the_minimum", ("{workdir}", "--out={workdir}.out"),
         "error: {workdir}: no best pruned level yet (minimum not yet reached); give --level=N",
         breaks=lambda workdir: None, module="experiments.export"),
    Case("export_level_not_reached", ("{workdir}", "--level=9", "--out={workdir}.out"),
         "error: --level: {workdir} has no finished level 9 (finished: [0, 1, 2, 3])",
         breaks=lambda workdir: None, module="experiments.export"),
    Case("export_unknown_format", ("{workdir}", "--format=csr", "--out={workdir}.out"),
         "error: --format: expected one of ('compact', 'bcoo'), got 'csr'",
         breaks=lambda workdir: None, module="experiments.export"),
    Case("export_replicate_out_of_range", ("{workdir}", "--level=0", "--replicate=5",
                                           "--out={workdir}.out"),
         "error: --replicate: {workdir} has replicates 0..1, got 5",
         breaks=lambda workdir: None, module="experiments.export"),
    Case("export_out_is_a_file", ("{workdir}", "--level=0", "--out={workdir}/config.json"),
         "error: --out: cannot write into {workdir}/config.json: {workdir}/config.json is a "
         "file, not a folder; give a folder", breaks=lambda workdir: None,
         module="experiments.export"),
    Case("export_out_under_a_file", ("{workdir}", "--level=0",
                                     "--out={workdir}/config.json/new"),
         "error: --out: cannot write into {workdir}/config.json/new: {workdir}/config.json is "
         "a file, not a folder; give a folder", breaks=lambda workdir: None,
         module="experiments.export"),
    # /sys: a folder no one may write into, root included (whom chmod does not stop).
    Case("export_out_in_an_unwritable_folder", ("{workdir}", "--level=0",
                                                "--out=/sys/imp_jax_export"),
         "error: --out: cannot write into /sys/imp_jax_export: /sys is not writable (",
         breaks=lambda workdir: None, module="experiments.export"),
    Case("export_twice_in_one_format", ("{workdir}", "--level=0", "--out={workdir}.out"),
         "error: --out: {workdir}.out/compact.npz exists (an earlier export); give another "
         "--out, or --overwrite to replace it", breaks=lambda workdir: None,
         module="experiments.export", prepare=_earlier_export),
    Case("export_level_checkpoint_truncated", ("{workdir}", "--level=1", "--out={workdir}.out"),
         "error: checkpoint {workdir}/checkpoints/levels/1 is unreadable (",
         breaks=_corrupt("checkpoints/levels/1/state/d/*", "truncate"),
         module="experiments.export"),
    Case("export_level_checkpoint_deleted", ("{workdir}", "--level=1", "--out={workdir}.out"),
         "error: checkpoint {workdir}/checkpoints/levels/1 is missing; train it again with: "
         "python -m experiments.run --workdir={workdir} (its metrics rows are kept)",
         breaks=_delete("checkpoints/levels/1"), module="experiments.export"),
    Case("report_level_checkpoint_deleted", ("{workdir}", "--redraw"),
         "error: checkpoint {workdir}/checkpoints/levels/0 is missing; train it again with: "
         "python -m experiments.run --workdir={workdir} (its metrics rows are kept)",
         breaks=_delete("checkpoints/levels/0"), module="experiments.report"),
    Case("report_level_checkpoint_garbage", ("{workdir}", "--redraw"),
         "error: checkpoint {workdir}/checkpoints/levels/0 is unreadable (",
         breaks=_corrupt("checkpoints/levels/0/state/manifest.ocdbt", "garbage"),
         module="experiments.report"),
    Case("report_mistyped_run_directory", ("{workdir}-typo",),
         "error: {workdir}-typo does not exist (not started yet, or a mistyped path)",
         module="experiments.report"),
]


@dataclasses.dataclass(frozen=True)
class Damage:
    """A damaged copy of the tiny run that running it again repairs, what the run must say
    ({workdir} is filled in), and whether its rows are left as they were."""

    name: str
    breaks: Callable[[Path], None]
    says: tuple[str, ...]
    rows_kept: bool = True


def _delete_all(*relatives: str) -> Callable[[Path], None]:
    def delete(workdir: Path) -> None:
        for relative in relatives:
            _delete(relative)(workdir)
    return delete


AGAIN = "; training level {level} again (its metrics rows are kept)"
DAMAGES = [
    Damage("level_checkpoint_truncated",
           _corrupt(f"checkpoints/levels/{LAST}/state/d/*", "truncate"),
           (f"checkpoint {{workdir}}/checkpoints/levels/{LAST} is unreadable (",
            AGAIN.format(level=LAST))),
    Damage("level_checkpoint_garbage",
           _corrupt(f"checkpoints/levels/{LAST}/state/manifest.ocdbt", "garbage"),
           (f"checkpoint {{workdir}}/checkpoints/levels/{LAST} is unreadable (",
            AGAIN.format(level=LAST))),
    Damage("level_checkpoint_piece_deleted",
           _corrupt(f"checkpoints/levels/{LAST}/state/_METADATA", "delete"),
           (f"checkpoint {{workdir}}/checkpoints/levels/{LAST} is ", AGAIN.format(level=LAST))),
    Damage("dense_level_checkpoint_truncated",
           _corrupt("checkpoints/levels/0/state/d/*", "truncate"),
           ("checkpoint {workdir}/checkpoints/levels/0 is unreadable (", AGAIN.format(level=0))),
    Damage("dense_level_and_rewind_deleted",
           _delete_all("checkpoints/levels/0", "checkpoints/rewind"),
           ("checkpoint {workdir}/checkpoints/levels/0 is missing" + AGAIN.format(level=0),)),
    Damage("middle_level_and_rewind_deleted",
           _delete_all("checkpoints/levels/1", "checkpoints/rewind"),
           ("checkpoint {workdir}/checkpoints/levels/1 is missing" + AGAIN.format(level=1),
            "checkpoint {workdir}/checkpoints/rewind/0 is missing; making the rewind point "
            "again (level 0 to step 0)")),
    Damage("rewind_checkpoint_garbage", _garble_rewind,
           ("checkpoint {workdir}/checkpoints/rewind/0 is unreadable (",
            "; making the rewind point again (level 0 to step 0)"), rows_kept=False),
]


@dataclasses.dataclass(frozen=True)
class Outcome:
    workdir: Path
    before: dict[str, str]  # digests of the broken run directory before the command
    out: subprocess.CompletedProcess


def _run_case(case: Case, tiny_finished_run: Path, workdir: Path) -> Outcome:
    before = {}
    if case.breaks:
        shutil.copytree(tiny_finished_run, workdir)
        case.breaks(workdir)
        before = digests(workdir)
    if case.prepare:
        workdir.parent.mkdir(parents=True, exist_ok=True)
        case.prepare(workdir)
    flags = [f.format(workdir=workdir) for f in case.flags]
    if case.module != "experiments.run":
        return Outcome(workdir, before, run_cli(*flags, module=case.module))
    if not any(f.startswith("--workdir=") for f in flags):
        flags.append(f"--workdir={workdir}")
    extra = TINY_MIXTURE if case.config.startswith("--config=configs/mixture") else []
    config = [case.config.format(workdir=workdir)] if case.config else []
    out = run_cli(*config, *extra, *flags)
    return Outcome(workdir, before, out)


def _repair(damage: Damage, tiny_finished_run: Path, workdir: Path) -> Outcome:
    shutil.copytree(tiny_finished_run, workdir)
    damage.breaks(workdir)
    return Outcome(workdir, {}, run_cli(*MIXTURE, f"--workdir={workdir}"))


@pytest.fixture(scope="module")
def outcomes(tiny_finished_run: Path, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[dict[str, Future[Outcome]]]:
    """Every case of the tables (bad inputs, damages), run side by side: they are independent
    processes that spend most of their time starting up."""
    root = tmp_path_factory.mktemp("cases")
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        yield {**{c.name: pool.submit(_run_case, c, tiny_finished_run, root / c.name / "run")
                  for c in CASES},
               **{d.name: pool.submit(_repair, d, tiny_finished_run, root / d.name / "run")
                  for d in DAMAGES}}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bad_input_stops_with_one_line(case: Case, outcomes: dict[str, Future[Outcome]]
                                       ) -> None:
    outcome = outcomes[case.name].result()
    assert case.expect.format(workdir=outcome.workdir) in error_line(outcome.out)
    if outcome.before:  # finished levels, rows, summary and checkpoints are untouched
        assert digests(outcome.workdir) == outcome.before
    elif not case.breaks:
        assert not outcome.workdir.exists()  # nothing was created for a run that never started


def test_there_are_at_least_twenty_bad_inputs() -> None:
    names = [c.name for c in CASES] + [d.name for d in DAMAGES]
    assert len(CASES) >= 20 and len(set(names)) == len(names)


@pytest.mark.parametrize("damage", DAMAGES, ids=lambda d: d.name)
def test_damaged_checkpoints_are_trained_again(damage: Damage, tiny_finished_run: Path,
                                               outcomes: dict[str, Future[Outcome]]) -> None:
    outcome = outcomes[damage.name].result()
    out, workdir = outcome.out, outcome.workdir
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr[-3000:]
    for text in damage.says:
        assert text.format(workdir=workdir) in out.stderr, out.stderr[-3000:]
    if damage.rows_kept:
        assert rows(workdir) == rows(tiny_finished_run)  # kept, none written again
    assert soak.compare(tiny_finished_run, workdir).ok  # the same rows, masks and params
    status = json.loads((workdir / "status.json").read_text())
    assert (status["state"], status["level"]) == ("finished", LAST)


# -- recovering --------------------------------------------------------------------------------


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
    _unfinish(workdir)
    _corrupt(f"checkpoints/progress/{PROGRESS}/state/d/*", "garbage")(workdir)
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
    _corrupt(f"checkpoints/levels/{level}/state/d/*", "truncate")(workdir)
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
    _edit_config("model", "hidden", [9])(workdir)
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


# -- round three: many processes, upgrades, partial figures ------------------------------------
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
