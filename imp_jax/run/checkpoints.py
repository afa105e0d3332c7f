"""Orbax checkpoints of an IMP run: the rewind point, each finished level, in-level progress.

    checkpoints/rewind/<step>/     the rewind point (written once)
    checkpoints/levels/<level>/    the trained state at the end of each level (all kept)
    checkpoints/progress/<index>/  the latest in-level state (only the last is kept)

Each checkpoint holds the train state pytree and a small JSON ``meta`` item. Orbax commits a
checkpoint by renaming a finished temporary directory, so a kill mid-write leaves no partial one.
:class:`Checkpoints` names what each series holds (``save_level``, ``restore_rewind``,
``latest_progress``, ...) and keeps the metadata and the progress index to itself.

A missing or damaged checkpoint costs time, never results: training is deterministic, so the
trainer (:mod:`imp_jax.run.driver`) trains a missing or unreadable level or rewind point again to
the same state, and restarts a level whose in-level checkpoint is unreadable; readers, which change
nothing, name the command that does it.
"""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp

from imp_jax.run.rundir import RunDirError

PyTree = Any


def retrain_command(run_dir: Path) -> str:
    """The command that trains a run's missing levels again: its trainer finds every finished
    level whose checkpoint is missing and retrains it (see :meth:`imp_jax.run.driver.Run.run`)."""
    return f"python -m experiments.run --workdir={run_dir}"


class CheckpointError(RunDirError):
    """A checkpoint cannot be written or read; the message names it and says what to do."""


@functools.cache  # installed once
def _quiet_abandoned_io() -> None:
    """Silences the echoes of a failed save or restore: TensorStore finishes the reads and writes
    Orbax abandoned by calling back into Orbax's closed event loop, and Python would print a
    traceback for each of these callbacks around the one clear error."""
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        e = unraisable.exc_value
        if not (isinstance(e, RuntimeError) and str(e) == "Event loop is closed"):
            previous(unraisable)

    sys.unraisablehook = hook


def _cause(e: Exception) -> str:
    """The first line of an Orbax/TensorStore error, cut short (they quote whole specs)."""
    text = (str(e).strip().splitlines() or [""])[0]
    return f"{type(e).__name__}: {text[:200]}{'...' if len(text) > 200 else ''}"


class Checkpoints:
    """The three checkpoint series of one run directory; ``read_only`` opens them for readers,
    which create and change nothing."""

    def __init__(self, root: Path, read_only: bool = False) -> None:
        def manager(name: str, keep: int | None) -> ocp.CheckpointManager:
            options = ocp.CheckpointManagerOptions(
                max_to_keep=keep, create=not read_only, read_only=read_only,
                enable_async_checkpointing=False)
            return ocp.CheckpointManager(Path(root).resolve() / name, options=options)

        _quiet_abandoned_io()
        self.read_only = read_only
        self.run_dir = Path(root).resolve().parent
        self.rewind = manager("rewind", 1)
        self.levels = manager("levels", None)
        self.progress = manager("progress", 1)

    def __enter__(self) -> Checkpoints:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what each series holds --------------------------------------------------------------

    def save_rewind(self, step: int, state: PyTree) -> None:
        """The rewind point: the state after ``step`` training steps of level 0."""
        self.save(self.rewind, step, state, {"step": step})

    def restore_rewind(self, step: int, target: PyTree) -> PyTree:
        return self._restore(self.rewind, step, target)

    def _restore(self, manager: ocp.CheckpointManager, index: int, target: PyTree) -> PyTree:
        try:
            return self.restore(manager, index, target)[0]
        except CheckpointError as e:
            if not self.read_only:
                raise  # the trainer recovers (imp_jax.run.driver)
            raise self._for_readers(manager, index, target, e) from e

    def _for_readers(self, manager: ocp.CheckpointManager, index: int, target: PyTree,
                     error: CheckpointError) -> CheckpointError:
        """What a reader, which changes nothing, says about a checkpoint it cannot restore:
        missing or damaged, the command that trains it again; readable without ``target``,
        the config.json that no longer matches it."""
        path = manager.directory / str(index)
        retrain = (f"train it again with: {retrain_command(self.run_dir)} (its metrics rows "
                   f"are kept)")
        if index not in manager.all_steps():
            return CheckpointError(f"checkpoint {path} is missing; {retrain}")
        if target is not None:
            try:
                self.restore(manager, index, None)
            except CheckpointError:
                pass
            else:
                return CheckpointError(
                    f"checkpoint {path} cannot be restored with the run's config.json "
                    f"({_cause(error.__cause__ or error)}); if config.json was edited, put back "
                    f"the config the run was trained with")
        return CheckpointError(f"{error}; delete that directory, then {retrain}")

    def save_level(self, level: int, state: PyTree) -> None:
        """The trained state at the end of ``level``."""
        self.save(self.levels, level, state, {"level": level})

    def restore_level(self, level: int, target: PyTree | None) -> PyTree:
        """The trained state at the end of ``level``; with ``target`` None, as saved (its
        arrays as numpy arrays)."""
        return self._restore(self.levels, level, target)

    def finished_levels(self) -> list[int]:
        """The levels whose trained state is saved, in order."""
        return sorted(self.levels.all_steps())

    def save_progress(self, level: int, step: int, total_steps: int, state: PyTree,
                      epoch: float) -> None:
        """The in-level state of ``level`` after ``step`` of its ``total_steps`` steps, which
        is ``epoch`` epochs."""
        # One index series over all levels: Orbax keeps the latest, and indices only grow.
        self.save(self.progress, level * (total_steps + 1) + step, state,
                  {"level": level, "step": step, "epoch": epoch})

    def resume_point(self) -> tuple[int, float] | None:
        """Where training would resume, ``(level, epoch)``, from the checkpoints alone (without
        restoring any state); None when there is none."""
        levels, latest = self.finished_levels(), self.progress.latest_step()
        if not levels and latest is None and not self.rewind.all_steps():
            return None
        level, epoch = levels[-1] + 1 if levels else 0, 0.0
        if latest is not None:
            try:
                meta = self.progress.restore(latest, args=ocp.args.Composite(
                    meta=ocp.args.JsonRestore())).meta
            except Exception:  # unreadable: the trainer restarts the level from its start
                meta = {}
            if meta.get("level") == level:
                epoch = meta.get("epoch", 0.0)
        return level, epoch

    def latest_progress(self, level: int, target: PyTree) -> PyTree | None:
        """The latest in-level state of ``level``, or None (none saved, another level's, or
        unreadable: that one is deleted, since training is deterministic and the level can be
        redone from its start)."""
        latest = self.progress.latest_step()
        if latest is None:
            return None
        try:
            state, meta = self.restore(self.progress, latest, target)
        except CheckpointError as e:
            logging.getLogger(__name__).warning("%s; restarting level %d from its beginning",
                                                e, level)
            self.progress.delete(latest)  # else it would block a save at that index
            return None
        if meta["level"] != level:
            return None
        logging.getLogger(__name__).info("level %d: resuming at epoch %g (step %d)", level,
                                         meta.get("epoch", 0), meta["step"])
        return state

    @staticmethod
    def save(manager: ocp.CheckpointManager, index: int, state: PyTree,
             meta: dict[str, Any]) -> None:
        """Saves ``state`` and ``meta`` as checkpoint ``index`` of ``manager`` (synchronously).

        Raises:
          CheckpointError: the write failed (e.g. the disk is full); earlier checkpoints are kept.
        """
        try:
            manager.save(index, args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)
            manager.wait_until_finished()
        except Exception as e:  # Orbax and TensorStore raise many types; all mean "not saved"
            raise CheckpointError(f"cannot write checkpoint {manager.directory / str(index)} "
                                  f"({_cause(e)}); the checkpoints before it are kept") from e

    @staticmethod
    def restore(manager: ocp.CheckpointManager, index: int,
                target: PyTree) -> tuple[PyTree, dict[str, Any]]:
        """Restores checkpoint ``index``; ``target`` gives the tree structure, shapes and dtypes.

        Raises:
          CheckpointError: the checkpoint is missing, truncated or corrupt; the message names its
            directory.
        """
        path = manager.directory / str(index)
        if index not in manager.all_steps():
            raise CheckpointError(f"checkpoint {path} is missing")
        try:
            out = manager.restore(index, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
        except Exception as e:  # Orbax and TensorStore raise many types; all mean "unreadable"
            raise CheckpointError(f"checkpoint {path} is unreadable ({_cause(e)})") from e
        return out.state, out.meta

    def close(self) -> None:
        for m in (self.rewind, self.levels, self.progress):
            m.close()
