"""Exports of a run's levels: a finished level read from its checkpoints (without the dataset or
the model), the best pruned level resolved, and the requested export made."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from imp_jax.core import analysis
from imp_jax.data import tasks
from imp_jax.export.networks import EXPORTERS, FORMATS, Exported, ExportError, compact
from imp_jax.run.checkpoints import Checkpoints
from imp_jax.run.rundir import RunDir

if TYPE_CHECKING:
    import ml_collections

PyTree = Any



@dataclasses.dataclass(frozen=True)
class Source:
    """One replicate of one finished level of a run, as its checkpoint holds it, with the
    ``meta`` (``normalisation`` and ``source``) that an export records."""

    params: PyTree
    masks: PyTree
    model_state: PyTree
    meta: dict[str, Any]


def stored_config(run_dir: str | Path) -> ml_collections.ConfigDict:
    """The config of the run in ``run_dir``.

    Raises:
      ExportError: ``run_dir`` does not exist or is not a run directory.
    """
    rundir = RunDir(run_dir)
    if not rundir.root.is_dir():
        raise ExportError(f"{run_dir} is not a run directory: "
                          f"{'it is a file' if rundir.root.exists() else 'it does not exist'}")
    config = rundir.stored_config()
    if config is None:
        raise ExportError(f"{run_dir} is not an imp_jax run directory (no config.json)")
    return config


def resolve_level(run_dir: str | Path, level: str | int) -> int:
    """``level`` as a number: ``"best"`` is the run's best pruned level
    (:func:`imp_jax.core.analysis.best_level`).

    Raises:
      ExportError: no metrics, the best pruned level is not reached yet, or ``level`` is neither
        ``best`` nor a number.
    """
    if str(level) != "best":
        try:
            return int(level)
        except ValueError:
            raise ExportError(f"--level: expected 'best' or a level number, got {level!r}"
                              ) from None
    rows = RunDir(run_dir).read_rows()
    best = analysis.best_level(rows) if rows else None
    if best is None:
        raise ExportError(f"{run_dir}: no best pruned level yet ("
                          f"{'no finished level' if not rows else analysis.STATUS_NOT_PASSED}); "
                          f"give --level=N")
    return best


def read_level(run_dir: str | Path, level: int, replicate: int | None = 0) -> list[Source]:
    """Reads finished level ``level`` from the run's checkpoints (read-only, without the
    dataset or the model): replicate ``replicate``, or every replicate when it is None.

    Raises:
      ExportError: not a run directory, or no such level or replicate.
      CheckpointError: the level's checkpoint is missing or unreadable (the message names the
        command that trains it again).
    """
    rundir = RunDir(run_dir)
    config = stored_config(run_dir)
    replicates = int(config.replicates)
    if replicate is not None and not 0 <= replicate < replicates:
        raise ExportError(f"--replicate: {run_dir} has replicates 0..{replicates - 1}, "
                          f"got {replicate}")
    with Checkpoints(rundir.checkpoints, read_only=True) as ckpt:
        levels = ckpt.finished_levels()
        finished = sorted(set(levels) | {row["level"] for row in rundir.read_rows()})
        if level not in finished:
            raise ExportError(f"--level: {run_dir} has no finished level {level} "
                              f"(finished: {finished})")
        state = ckpt.restore_level(level, None)  # a missing one: the command to retrain it
    # Image runs standardise raw uint8 pixels (on the host, or on device with data.augment):
    # the export does it too, so that it takes what the dataset gives.
    stats = None
    if tasks.get(config.data.name).stats is not None:
        stats = (tasks.IMAGENET if config.data.normalisation == "imagenet"
                 else tasks.get(config.data.name).stats)
    out = []
    for r in range(replicates) if replicate is None else (replicate,):
        one = jax.tree_util.tree_map(lambda a, r=r: np.asarray(a)[r],
                                     {k: state[k] for k in ("params", "masks", "model_state")})
        meta = {"normalisation": None if stats is None else [list(stats[0]), list(stats[1])],
                "source": {"run": str(rundir.root.resolve()), "level": level, "replicate": r}}
        out.append(Source(one["params"], one["masks"], one["model_state"], meta))
    return out


def export_run(run_dir: str | Path, fmt: str, level: str | int = "best",
               replicate: int = 0) -> Exported:
    """The ``fmt`` export (one of :data:`FORMATS`) of a level of a run (``"best"``: its best
    pruned level).

    Raises:
      ExportError: see :func:`resolve_level`, :func:`read_level`; or an unknown ``fmt``.
    """
    check_request(run_dir, fmt, level)
    [source] = read_level(run_dir, resolve_level(run_dir, level), replicate)
    return EXPORTERS[fmt](source.params, source.masks, source.model_state, meta=source.meta)


def check_request(run_dir: str | Path, fmt: str, level: str | int) -> None:
    """Checks what can be checked of an export before any work: the format, the run directory
    and the level's spelling.

    Raises:
      ExportError: an unknown ``fmt``, a ``run_dir`` that holds no run, or a ``level`` neither
        ``best`` nor a number.
    """
    if fmt not in EXPORTERS:
        raise ExportError(f"--format: expected one of {FORMATS}, got {fmt!r}")
    stored_config(run_dir)
    if str(level) != "best":
        resolve_level(run_dir, level)


def compact_shapes(run_dir: str | Path, level: int) -> list[str]:
    """The compact shape (:func:`shape_of`) of every replicate of a finished level of a run."""
    return [compact(s.params, s.masks, s.model_state).shape
            for s in read_level(run_dir, level, None)]
