"""Orbax checkpoints of an IMP run: the rewind point, each finished level, in-level progress.

    checkpoints/rewind/<step>/     the rewind point (written once)
    checkpoints/levels/<level>/    the trained state at the end of each level (all kept)
    checkpoints/progress/<index>/  the latest in-level state (only the last is kept)

Each checkpoint holds the train state pytree and a small JSON ``meta`` item. Orbax commits a
checkpoint by renaming a finished temporary directory, so a kill mid-write leaves no partial one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp

PyTree = Any


class Checkpoints:
    """The three checkpoint series of one run directory."""

    def __init__(self, root: Path) -> None:
        def manager(name: str, keep: int | None) -> ocp.CheckpointManager:
            options = ocp.CheckpointManagerOptions(
                max_to_keep=keep, create=True, enable_async_checkpointing=False)
            return ocp.CheckpointManager(Path(root).resolve() / name, options=options)

        self.rewind = manager("rewind", 1)
        self.levels = manager("levels", None)
        self.progress = manager("progress", 1)

    @staticmethod
    def save(manager: ocp.CheckpointManager, index: int, state: PyTree,
             meta: dict[str, Any]) -> None:
        """Saves ``state`` and ``meta`` as checkpoint ``index`` of ``manager`` (synchronously)."""
        manager.save(index, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)
        manager.wait_until_finished()

    @staticmethod
    def restore(manager: ocp.CheckpointManager, index: int,
                target: PyTree) -> tuple[PyTree, dict[str, Any]]:
        """Restores checkpoint ``index``; ``target`` gives the tree structure, shapes and dtypes."""
        out = manager.restore(index, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
        return out.state, out.meta

    def close(self) -> None:
        for m in (self.rewind, self.levels, self.progress):
            m.close()
