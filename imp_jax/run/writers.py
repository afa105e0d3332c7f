"""Where a run's training curves go: one small interface, a TensorBoard writer behind it.

:class:`MetricWriter` is all a writer needs: ``scalars(step, values)`` and ``close()``. The
TensorBoard writer is tensorboardX's ``SummaryWriter``: it writes the event files TensorBoard
reads with protobuf alone, so TensorFlow stays out of the training process (CLU's writers would
bring TensorFlow or need it for their TensorBoard backend). A W&B or other writer is a class
with the same two methods, passed to the driver beside it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol


class MetricWriter(Protocol):
    """Receives named scalars at integer steps."""

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        """Records every ``name: value`` of ``values`` at ``step``."""

    def close(self) -> None:
        """Flushes and releases the writer."""


class TensorBoardWriter:
    """Event files under ``root``, through tensorboardX (created on the first write).

    A tag ``level_NN/name`` is written as ``name`` to the TensorBoard run
    ``root/level_NN/<run>``, other tags to ``root/<run>``: the levels share their tag names, so
    one chart overlays every level's training curve (and the replicates, ``run`` apart).
    """

    def __init__(self, root: str | Path, run: str = "") -> None:
        self.root = Path(root)
        self.run = run
        self._writers: dict[Path, Any] = {}

    def _writer(self, logdir: Path) -> Any:
        if logdir not in self._writers:
            from tensorboardX import SummaryWriter  # imported only by runs that write

            self._writers[logdir] = SummaryWriter(str(logdir))
        return self._writers[logdir]

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        used = set()
        for tag, value in values.items():
            group, _, name = tag.partition("/")
            logdir = self.root / self.run
            if group.startswith("level_") and name:
                logdir, tag = self.root / group / self.run, name
            self._writer(logdir).add_scalar(tag, float(value), int(step))
            used.add(logdir)
        for logdir in used:
            self._writers[logdir].flush()

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
