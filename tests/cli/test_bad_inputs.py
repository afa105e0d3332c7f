"""Bad inputs through the command line: each stops with one clear ``error:`` line on stderr and
leaves an existing run as it was; missing or unreadable checkpoints are recovered from instead
(levels and the rewind point trained again, to the same state). Recovering from other damage,
and following each message's advice: ``test_recovery.py``; several processes and upgrades:
``test_many_processes.py``.

The run directories are copies of the session's tiny finished run; a run directory whose path
runs through a regular file (ENOTDIR) is one of the cases, a disk that fills up even for root.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from experiments.harness import soak
from tests.cli.runs import (
    LAST,
    MIXTURE,
    PROGRESS,
    corrupt,
    digests,
    edit_config,
    error_line,
    rows,
    unfinish,
)
from tests.helpers import MNIST_ARCHIVES, TINY_MIXTURE, run_cli

# -- the table ---------------------------------------------------------------------------------


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


def _garble_rewind(workdir: Path) -> None:
    """Killed before the last level's first in-level checkpoint (so the level starts from the
    rewind point), and the rewind point damaged."""
    unfinish(workdir)
    shutil.rmtree(workdir / "checkpoints" / "progress" / str(PROGRESS))
    corrupt("checkpoints/rewind/0/state/d/*", "garbage")(workdir)


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
         "config.json (", breaks=edit_config("model", "hidden", [9]),
         module="experiments.report"),
    Case("report_after_num_bins_edited", ("{workdir}", "--noplots"),
         "error: {workdir}: metric 'test_ece_10' is missing from the rows of level 0",
         breaks=edit_config("eval", "num_bins", 10), module="experiments.report"),
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
         breaks=corrupt("checkpoints/levels/1/state/d/*", "truncate"),
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
         breaks=corrupt("checkpoints/levels/0/state/manifest.ocdbt", "garbage"),
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
           corrupt(f"checkpoints/levels/{LAST}/state/d/*", "truncate"),
           (f"checkpoint {{workdir}}/checkpoints/levels/{LAST} is unreadable (",
            AGAIN.format(level=LAST))),
    Damage("level_checkpoint_garbage",
           corrupt(f"checkpoints/levels/{LAST}/state/manifest.ocdbt", "garbage"),
           (f"checkpoint {{workdir}}/checkpoints/levels/{LAST} is unreadable (",
            AGAIN.format(level=LAST))),
    Damage("level_checkpoint_piece_deleted",
           corrupt(f"checkpoints/levels/{LAST}/state/_METADATA", "delete"),
           (f"checkpoint {{workdir}}/checkpoints/levels/{LAST} is ", AGAIN.format(level=LAST))),
    Damage("dense_level_checkpoint_truncated",
           corrupt("checkpoints/levels/0/state/d/*", "truncate"),
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


@pytest.mark.slow  # the cases run the command line in subprocesses
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


@pytest.mark.slow
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
