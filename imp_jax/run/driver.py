"""The prune-retrain driver: iterative magnitude pruning as a loop of re-runnable steps.

Level 0 trains the dense network from its initialisation and saves the rewind point (the
initial state, or the state after k steps). Every later level prunes the previous level's
trained weights, rewinds the survivors, rebuilds the optimizer state and retrains. After each
level one metrics row per replicate is appended to ``metrics.jsonl``. Every step skips what its
output already shows, so a run killed at any point resumes from its last checkpoint when started
again: finished levels are never redone and rows never duplicated. All replicates run as one
compiled program, and every level reuses the same compiled functions (masks are inputs).

One process trains in a run directory at a time (its lock, :meth:`RunDir.locked`); readers open
a run with ``read_only=True`` and change nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from imp_jax import masks as masks_lib
from imp_jax.core import analysis, pruning, train
from imp_jax.run import evaluation, logs, memory, signals
from imp_jax.run import progress as progress_lib
from imp_jax.run.checkpoints import CheckpointError, Checkpoints
from imp_jax.run.experiment import Experiment, build
from imp_jax.run.progress import Progress
from imp_jax.run.rundir import RunDir, RunDirError, read_json
from imp_jax.run.writers import MetricWriter, TensorBoardWriter

PyTree = Any
log = logging.getLogger(__name__)
__all__ = ["Checkpoints", "Experiment", "Run", "RunInterruptedError", "TrainingDivergedError",
           "build", "open_run", "plan", "run"]


class TrainingDivergedError(FloatingPointError):
    """The training loss became NaN or infinite."""


class RunInterruptedError(RuntimeError):
    """SIGTERM or SIGINT stopped the run after writing a checkpoint; ``signum`` says which,
    ``level`` and ``epoch`` where it resumes (None: not a run's training loop)."""

    def __init__(self, message: str, signum: int, level: int | None = None,
                 epoch: float | None = None) -> None:
        super().__init__(message)
        self.signum, self.level, self.epoch = signum, level, epoch


# -- compiled pieces (built once per experiment, reused by every level) -------------------------


# Outputs keep the state's sharding, as restored checkpoints have it: jit's cache keys on input
# shardings, so a level fed differently placed arrays would compile again.
@functools.cache
def _pruner(method: str, fraction: float, spec: masks_lib.PrunableSpec, count: str,
            sharding: jax.sharding.Sharding):
    rule = pruning.METHODS[method]
    return jax.jit(jax.vmap(lambda p, m, key: rule(p, m, key, fraction=fraction, spec=spec,
                                                   count=count)), out_shardings=sharding)


def _prune(exp: Experiment, state: train.TrainState, keys: jax.Array) -> PyTree:
    """The masks of the next level: ``state``'s trained weights pruned by ``config.prune``."""
    c = exp.config.prune
    return _pruner(c.method, c.fraction, exp.spec, c.count, exp.layout.per_replicate)(
        state.params, state.masks, keys)


@functools.cache
def _rewinder(trainer: train.Trainer):
    return jax.jit(jax.vmap(trainer.rewind), out_shardings=trainer.state_sharding)


def _counts(exp: Experiment, masks: PyTree) -> tuple[int, int]:
    """The remaining kernel and prunable weights of ``masks`` (replicates prune alike)."""
    counts = evaluation.weight_counts(exp, masks)[0]
    return counts["remaining_weights"], counts["prunable_remaining"]


def next_level_stop(exp: Experiment, level: int, masks: PyTree) -> str | None:
    """Why no level after ``level``, whose masks are ``masks``, should run, or None. Exact for
    global pruning; for layerwise pruning the counts are pooled."""
    return _stop(exp.config, level, *_counts(exp, masks))


def _stop(c: ml_collections.ConfigDict, level: int, remaining: int, prunable: int) -> str | None:
    if level >= c.imp.levels:
        return f"reached imp.levels={c.imp.levels}"
    n = masks_lib.step_size(c.prune.fraction, remaining, prunable, c.prune.count)
    if n > prunable:
        return (f"the next level would prune {n} weights (prune.count={c.prune.count!r}) and "
                f"only {prunable} prunable weights remain")
    if prunable - n < max(c.imp.min_weights, 1):
        return (f"the next level would keep {prunable - n} prunable weights, fewer than "
                f"imp.min_weights={c.imp.min_weights}" if c.imp.min_weights else
                "no prunable weight would remain")
    return None


def _saved_counts(c: ml_collections.ConfigDict, rundir: RunDir,
                  level: int) -> tuple[int, int] | None:
    """The remaining kernel and prunable weights of ``level``'s saved masks, as its rows would
    count them (replicates prune alike); None where its checkpoint is unreadable."""
    try:
        with Checkpoints(rundir.checkpoints, read_only=True) as ckpt:
            masks = ckpt.restore_level(level, None)["masks"]
    except CheckpointError:
        return None
    first = jax.tree_util.tree_map(lambda m: np.asarray(m)[0], masks)
    spec = masks_lib.PrunableSpec(exclude=tuple(c.prune.exclude))
    kernels = masks_lib.PrunableSpec(min_ndim=spec.min_ndim)
    return masks_lib.count(first, kernels)["remaining"], masks_lib.count(first, spec)["remaining"]


def past_minimum(c: ml_collections.ConfigDict, rows: list[dict[str, Any]]) -> str | None:
    """Why a run of ``c`` with metrics ``rows`` stops under ``imp.stop_after_minimum``, or
    None: the rows' mean test error has its best pruned model that many levels back."""
    after = c.imp.stop_after_minimum
    if not after:
        return None
    found = analysis.levels_past_best(rows)
    if found is None or found[1] < after:
        return None
    return (f"{found[1]} level(s) past the best pruned model (level {found[0]}; "
            f"imp.stop_after_minimum={after})")


def last_level(exp: Experiment, level: int, masks: PyTree) -> int:
    """The last level the run will reach from ``level``, whose masks are ``masks`` (see
    :func:`next_level_stop`)."""
    c = exp.config
    remaining, prunable = _counts(exp, masks)
    while _stop(c, level, remaining, prunable) is None:
        n = masks_lib.step_size(c.prune.fraction, remaining, prunable, c.prune.count)
        level, remaining, prunable = level + 1, remaining - n, prunable - n
    return level


@dataclasses.dataclass
class _Timer:
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)

    @contextlib.contextmanager
    def timed(self, name: str) -> Iterator[None]:
        """Adds the time spent in the block to ``seconds[name]``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


def _barrier(name: str) -> None:
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def _note_stop(handler: logging.Handler, progress: Progress, e: Exception) -> None:
    """``status.json`` and ``log.txt`` say why the run stopped: "interrupted" by a signal (a
    checkpoint was written), else "failed", with the one line the command prints."""
    stopped = isinstance(e, RunInterruptedError)
    if stopped:
        progress.stopped("interrupted", e.level, e.epoch)
    else:
        progress.stopped("failed")
    handler.handle(log.makeRecord(log.name, logging.INFO if stopped else logging.ERROR, "", 0,
                                  f"interrupted: {e}" if stopped else str(e), (), None))


def _diverged(exp: Experiment, level: int, stats: dict[str, jax.Array], diverged: np.ndarray,
              root: Path) -> np.ndarray:
    """The replicates skipped after a NaN/inf loss (``train.on_divergence="skip_replicate"``),
    with this chunk's; raises if it stops the run."""
    first_bad = np.asarray(stats["first_nonfinite_step"])
    bad = first_bad >= 0
    if not bad.any():
        return diverged
    where = ", ".join(f"replicate {r} at step {first_bad[r]}" for r in np.flatnonzero(bad))
    skip = exp.config.train.on_divergence == "skip_replicate"
    if not skip or (bad | diverged).all():
        raise TrainingDivergedError(
            f"level {level}: the training loss became NaN or infinite ({where}); finished "
            f"levels are kept in {root}"
            + ("" if skip else "; train.on_divergence=skip_replicate would skip it"))
    if (bad & ~diverged).any():
        log.warning("level %d: skipping diverged replicate(s): %s", level, where)
    return diverged | bad


def _pruned_and_rewound(exp: Experiment, rewind: Callable[[], PyTree], level: int,
                        previous: train.TrainState) -> train.TrainState:
    """The state ``level`` > 0 starts from: ``previous``'s weights pruned (a key per replicate
    and level), the survivors rewound to the rewind point that ``rewind`` gives (with
    ``imp.reinit``, to a fresh initialisation)."""
    keys = exp.replicate_keys()
    prune_keys = jax.vmap(lambda k: jax.random.fold_in(jax.random.fold_in(k, 0x9E3779B),
                                                       level))(keys)
    masks = _prune(exp, previous, prune_keys)
    if exp.config.imp.reinit:
        # Control: the ticket's mask on a fresh random initialisation, trained from step 0.
        point = exp.initial_state(jax.vmap(lambda k: jax.random.fold_in(k, level))(keys))
    else:
        point = rewind()
    return jax.block_until_ready(_rewinder(exp.trainer)(point, masks))


def _chunk_end(exp: Experiment, level: int, step: int) -> int:
    """Where in its epoch the compiled chunk from ``step`` ends: the epoch's end, or in level 0
    the rewind point (to save it) if it comes first."""
    spe = exp.trainer.steps_per_epoch
    epoch = step // spe
    if level == 0 and step < exp.rewind_step < (epoch + 1) * spe:
        return exp.rewind_step - epoch * spe
    return spe


def _save_rewind_point(exp: Experiment, ckpt: Checkpoints, level: int, step: int,
                       state: train.TrainState) -> None:
    """Saves the rewind point when level 0 reaches it (at its start for rewind "0")."""
    if level == 0 and step == exp.rewind_step and step not in ckpt.rewind.all_steps():
        ckpt.save_rewind(step, state)


def _tensorboard(rundir: RunDir, replicates: int) -> list[MetricWriter]:
    """The default writers: TensorBoard event files under ``tb/``, a run per replicate
    (``tb/replicate_R``: the curves along the levels) and per level and replicate
    (``tb/level_NN/replicate_R``: the level's training curves, the same tags at every level)."""
    return [TensorBoardWriter(rundir.tb, f"replicate_{r}") for r in range(replicates)]


def _resumable(stop: signals.Stop | None, level: int, step: int) -> None:
    """Tells the signal watchdog where the run would resume if it ended the process."""
    if stop is not None:
        stop.where = (f"during level {level}; nothing saved was lost: the same command resumes "
                      f"the run from level {level}, step {step}")


def _check_memory(exp: Experiment, target: PyTree) -> None:
    """On the CPU, MemoryError before anything is written when the state cannot fit."""
    if jax.default_backend() == "cpu":
        memory.check_fits(sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize
                              for x in jax.tree_util.tree_leaves(target)),
                          f"a run of {exp.replicates} replicate(s)")


class Run:
    """One IMP run in its run directory; :meth:`run` trains, prunes and resumes.

    Use it as a context manager (or call :meth:`close`). With ``read_only`` it opens an existing
    run for readers: nothing is claimed, created or written, and :meth:`run` is refused.
    ``writers`` receive the training curves (default: TensorBoard event files under ``tb/``,
    one directory per replicate).
    """

    def __init__(self, config: ml_collections.ConfigDict, workdir: str,
                 experiment: Experiment | None = None, *, read_only: bool = False,
                 writers: Sequence[MetricWriter] | None = None) -> None:
        self.exp = experiment or build(config)
        self.dir = RunDir(workdir)
        self.read_only = read_only
        # Several hosts share the run directory: process 0 writes the files, all write the
        # Orbax checkpoints together, and barriers keep the others from reading ahead of it.
        self.primary = jax.process_index() == 0 and not read_only
        self.target = self.exp.abstract_state()
        if not read_only:
            _check_memory(self.exp, self.target)
        if self.primary:
            self.dir.claim(config, replace=False)  # the lock holder replaces it in run()
        _barrier("claim")
        self.ckpt = Checkpoints(self.dir.checkpoints, read_only=read_only)
        self.writers = writers
        self.stop: signals.Stop | None = None
        # Replicates skipped after diverging (train.on_divergence="skip_replicate").
        self.diverged = np.zeros(self.exp.replicates, bool)
        self.retrained: list[int] = []  # finished levels trained again (missing checkpoints)
        self.progress = Progress(self.exp.config.imp.levels, self.exp.config.train.epochs)

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.ckpt.close()

    # -- what has been done --------------------------------------------------------------------

    def restore_level(self, level: int) -> train.TrainState:
        """The trained state (all replicates) at the end of a finished ``level``."""
        return self.ckpt.restore_level(level, self.target)

    def probabilities(self, state: train.TrainState, x: np.ndarray) -> np.ndarray:
        """Predicted class probabilities of every replicate of ``state``: (replicates, n, K)."""
        return evaluation.probabilities(self.exp, state, x)

    def finished_levels(self) -> list[int]:
        return self.ckpt.finished_levels()

    # -- the loop ------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Runs (or resumes) every level; returns the summary.

        Raises:
          RunDirBusyError: another process trains in this run directory.
          RunInterruptedError: SIGTERM/SIGINT arrived; a checkpoint was written first.
          TrainingDivergedError: a loss became NaN/inf (all replicates, with "skip_replicate").
        """
        if self.read_only:
            raise RunDirError(f"{self.dir.root} was opened read-only")
        with contextlib.ExitStack() as stack:
            if self.primary:
                stack.enter_context(self.dir.locked())
                self.dir.claim(self.exp.config)  # the config of the process holding the lock
                handler = stack.enter_context(logs.to_file(self.dir.log))
                log.info("run directory: %s", self.dir.root)
            self.stop = stack.enter_context(signals.stop_on_signals())
            self.progress = stack.enter_context(progress_lib.watching(
                self.exp.config, self.dir.status if self.primary else None,
                () if not self.primary else self.writers if self.writers is not None else
                _tensorboard(self.dir, self.exp.replicates)))
            log.info("%d replicate(s) on %d device(s), parallel.mode=%s, replicate_batching=%s",
                     self.exp.replicates, self.exp.layout.size, self.exp.layout.mode,
                     self.exp.trainer.replicate_batching)
            try:
                return self._levels()
            except Exception as e:
                if self.primary:
                    _note_stop(handler, self.progress, e)
                raise

    def _levels(self) -> dict[str, Any]:
        """IMP: train level 0; then prune, rewind and retrain, level after level."""
        done, state = self._resume()
        if done and (reason := next_level_stop(self.exp, done[-1], state.masks)
                     or self._past_minimum()):
            log.info("run in %s is finished (%s): %d levels", self.dir.root, reason, len(done))
            if self.retrained:  # status.json says finished again, at the last level
                self.progress.start_level(done[-1], self.exp.config.train.epochs)
                self.progress.finished()
            return self._summarise(finished=True)
        level = done[-1] + 1 if done else 0
        while True:
            timer = _Timer()
            state = self._level_start(level, state, timer)  # resumed, or pruned and rewound
            state = self._train_level(level, state, timer)
            with timer.timed("checkpoint"):
                self.ckpt.save_level(level, state)
            self._record(level, state, timer.seconds)
            if reason := next_level_stop(self.exp, level, state.masks) or self._past_minimum():
                log.info("stopping: %s", reason)
                return self._summarise(finished=True)
            level += 1

    def _past_minimum(self) -> str | None:
        """Why the run stops here under ``imp.stop_after_minimum``, or None (see
        :func:`past_minimum`)."""
        return past_minimum(self.exp.config, self.dir.read_rows())

    def _repair(self) -> list[dict[str, Any]]:
        """Before the loop: the rows deduplicated (a torn write, or rows written twice), the
        summary rebuilt from repaired rows, the replicates skipped after diverging marked;
        returns the rows."""
        rows, repaired = self.dir.repair_rows() if self.primary else (self.dir.read_rows(), False)
        _barrier("repair")
        for row in rows:
            self.diverged[row["replicate"]] |= bool(row.get("diverged", False))
        if repaired:
            stored = read_json(self.dir.summary)
            self._summarise(finished=isinstance(stored, dict) and bool(stored.get("finished")))
        return rows

    def _resume(self) -> tuple[list[int], train.TrainState | None]:
        """The levels the run has finished (every one up to the last with a checkpoint or rows)
        and the last one's state, each of them in place: a level whose checkpoint is missing,
        or unreadable where the run or its readers restore it (level 0, the best pruned level,
        the last), is trained again (:meth:`_ensure`); a level killed between its checkpoint
        and its rows gets its rows."""
        rows = self._repair()
        saved = self.finished_levels()
        reached = set(saved) | {row["level"] for row in rows}
        if not reached:
            return [], None
        done = list(range(max(reached) + 1))
        best = analysis.best_level(rows) if rows else None
        needed = {0, done[-1], *set(done).difference(saved), *([] if best is None else [best])}
        states = {level: self._ensure(level) for level in sorted(needed)}
        for level in done:
            if sum(row["level"] == level for row in rows) < self.exp.replicates:
                state = states[level] if level in states else self._ensure(level)
                self._record(level, state, {}, resumed=True)
        return done, states[done[-1]]

    def _ensure(self, level: int) -> train.TrainState:
        """The trained state of finished ``level``: restored; or, where its checkpoint is
        missing or unreadable, trained again from the level before (training is deterministic,
        so to the state it had, and the rows kept are the ones it would write), saying so."""
        if level in self.finished_levels():
            try:
                return self.restore_level(level)
            except CheckpointError as e:
                why = str(e)
            self.ckpt.levels.delete(level)  # else it would block saving the level again
        else:
            why = f"checkpoint {self.ckpt.levels.directory / str(level)} is missing"
        log.warning("%s; training level %d again (its metrics rows are kept)", why, level)
        previous = self._ensure(level - 1) if level else None
        timer = _Timer()
        state = self._level_start(level, previous, timer)
        # No periodic in-level checkpoint: it would replace the one of the level the run was in.
        state = self._train_level(level, state, timer, periodic=False)
        self.ckpt.save_level(level, state)
        self._record(level, state, timer.seconds)
        self.retrained.append(level)
        log.warning("level %d is trained and saved again", level)
        return state

    def _rewind_point(self) -> train.TrainState:
        """The rewind point; where its checkpoint is missing or unreadable, made again by
        training level 0 up to it from the initial state (deterministic: the same point),
        saying so."""
        step = self.exp.rewind_step
        try:
            return self.ckpt.restore_rewind(step, self.target)
        except CheckpointError as e:
            log.warning("%s; making the rewind point again (level 0 to step %d)", e, step)
        for old in self.ckpt.rewind.all_steps():
            self.ckpt.rewind.delete(old)
        self._train_level(0, self.exp.initial_state(), _Timer(), until=step, periodic=False)
        return self.ckpt.restore_rewind(step, self.target)

    def _level_start(self, level: int, previous: train.TrainState | None,
                     timer: _Timer) -> train.TrainState:
        """The state a level starts from: in-level progress if any, else rewound and pruned."""
        state = self.ckpt.latest_progress(level, self.target)
        if state is not None:
            return state
        if level == 0:
            return self.exp.initial_state()
        with timer.timed("prune"):
            return _pruned_and_rewound(self.exp, self._rewind_point, level, previous)

    def _train_level(self, level: int, state: train.TrainState, timer: _Timer, *,
                     until: int | None = None, periodic: bool = True) -> train.TrainState:
        """Trains ``level`` to the end (or to step ``until``) in compiled chunks (an epoch, or
        up to the rewind point), with the actions of :meth:`_after_chunk` between them
        (in-level checkpoints only if ``periodic``)."""
        exp = self.exp
        until = exp.total_steps if until is None else until
        spe = exp.trainer.steps_per_epoch
        step = int(exp.layout.fetch(state.step)[0])
        rng = exp.layout.fetch(state.rng)
        self.progress.start_level(level, step // spe, last_level(exp, level, state.masks))
        _resumable(self.stop, level, step)
        start = time.perf_counter()
        _save_rewind_point(exp, self.ckpt, level, step, state)
        while step < until:
            epoch, lo = divmod(step, spe)
            hi = _chunk_end(exp, level, step)
            order = exp.layout.put(exp.trainer.epoch_order(rng, epoch), exp.layout.per_replicate)
            state, stats = exp.trainer.run_steps(state, exp.x_train, exp.y_train, order, lo, hi)
            step = epoch * spe + hi
            self.diverged = _diverged(self.exp, level, stats, self.diverged, self.dir.root)
            with timer.timed("checkpoint"):
                self._after_chunk(level, step, state, periodic)
            if step % spe == 0:
                self.progress.epoch_end(level, step // spe, np.asarray(stats["loss"]),
                                        float(exp.trainer.learning_rate(step - 1)))
        timer.seconds["train"] = (time.perf_counter() - start
                                  - timer.seconds.get("checkpoint", 0.0))
        return state

    def _after_chunk(self, level: int, step: int, state: train.TrainState,
                     periodic: bool = True) -> None:
        """Between compiled chunks: the rewind point, the in-level checkpoint every
        ``checkpoint.every_epochs`` epochs (if ``periodic``), and a clean stop on
        SIGTERM/SIGINT."""
        exp, every = self.exp, self.exp.config.checkpoint.every_epochs
        _save_rewind_point(exp, self.ckpt, level, step, state)
        spe = exp.trainer.steps_per_epoch
        periodic = periodic and step % spe == 0 and every and (step // spe) % every == 0
        # One look at the signals: one that arrives during the save below waits for the next
        # chunk, rather than saving this step a second time (which Orbax refuses).
        signum = self.stop.signum if self.stop is not None else None
        if (periodic or signum) and step < exp.total_steps:
            self.ckpt.save_progress(level, step, exp.total_steps, state,
                                    step / exp.trainer.steps_per_epoch)
            _resumable(self.stop, level, step)
        if signum and step < exp.total_steps:
            self.stop.handled()
            raise RunInterruptedError(
                f"stopped by signal {signum} at level {level}, epoch {step / spe:g} (step "
                f"{step}); a checkpoint is written: run the same command again to resume",
                signum, level, step / spe)

    def _record(self, level: int, state: train.TrainState, seconds: dict[str, float],
                resumed: bool = False) -> None:
        """Evaluates ``state`` and appends the rows of the replicates that have none at ``level``.

        Some already have one after a torn append (only its cut last line was dropped), and all of
        them when a level is retrained after its unreadable checkpoint was deleted (training is
        deterministic, so the rows kept are the ones it would write).
        """
        replicates = evaluation.missing_replicates(self.exp, self.dir.read_rows(), level)
        if rows := evaluation.level_rows(self.exp, state, level, replicates, self.diverged,
                                         seconds):
            if self.primary:
                self.dir.append_rows(rows)
            _barrier(f"rows {level}")
            self.progress.level_done(level, rows, seconds, resumed)
            self._summarise(finished=False)

    def _summarise(self, finished: bool) -> dict[str, Any]:
        """Writes summary.json (see :func:`imp_jax.core.analysis.summarise`) and returns it."""
        summary = analysis.summarise(self.dir.read_rows(),
                                     num_bins=self.exp.config.eval.num_bins, finished=finished)
        if self.primary and self.dir.write_summary(summary) and finished:
            self.progress.finished()
        return summary


def plan(config: ml_collections.ConfigDict, workdir: str) -> str:
    """What running ``config`` in ``workdir`` would do: start, resume, train missing levels
    again, or find it finished (or being trained by another process), as :meth:`Run.run`
    decides it, from the rows and the checkpoints' names (and the saved masks of a last level
    killed before its rows); reads only.

    Raises:
      RunDirError: ``workdir`` cannot hold a run of ``config``, or its rows are unreadable.
    """
    rundir = RunDir(workdir)
    rundir.check(config)
    holder = rundir.holder()
    if holder:
        return f"is being trained by {holder}: a second trainer would be refused"
    rows = rundir.read_rows()
    saved, point = [], None
    if rundir.checkpoints.is_dir():
        with Checkpoints(rundir.checkpoints, read_only=True) as ckpt:
            saved, point = ckpt.finished_levels(), ckpt.resume_point()
    reached = set(saved) | {row["level"] for row in rows}
    if not reached:
        return ("would start a new run" if point is None else
                f"would resume at level {point[0]}, epoch {point[1]:g}")
    last = max(reached)
    missing = sorted(set(range(last + 1)).difference(saved))
    todo = [f"would train level(s) {', '.join(map(str, missing))} again (checkpoint missing)"
            ] if missing else []
    last_rows = [row for row in rows if row["level"] == last]
    if last_rows:
        counts = last_rows[0]["remaining_weights"], last_rows[0]["prunable_remaining"]
    else:  # killed between the level's checkpoint and its rows: the run writes them first
        counts = _saved_counts(config, rundir, last)
        todo.append(f"would write the rows of level {last} from its checkpoint")
    reason = (_stop(config, last, *counts) if counts else
              f"reached imp.levels={config.imp.levels}" if last >= config.imp.levels else None)
    reason = reason or (past_minimum(config, rows) if last_rows else None)
    again = ", ".join(todo)
    if reason:
        return (f"is finished ({last + 1} levels): {reason}; "
                + (again or "running it again changes nothing"))
    if again:
        unless = ("" if last_rows or not config.imp.stop_after_minimum else
                  " unless those rows stop it (imp.stop_after_minimum)")
        return f"{again}, then resume at level {last + 1}{unless}"
    level, epoch = point or (last + 1, 0.0)
    return f"would resume at level {level}, epoch {epoch:g}, after {last + 1} finished level(s)"


def open_run(workdir: str, *, read_only: bool = True) -> Run:
    """The :class:`Run` of an existing run directory, built from its ``config.json``; for
    readers unless ``read_only=False``.

    Raises:
      RunDirError: ``workdir`` holds no readable run.
    """
    rundir = RunDir(workdir)
    config = rundir.stored_config()
    if config is None:
        raise RunDirError(f"{rundir.root} has no config.json: not an imp_jax run directory")
    return Run(config, workdir, read_only=read_only)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Validates ``config``, then runs or resumes the run in ``workdir``; returns the summary."""
    with Run(config, workdir) as runner:
        return runner.run()
