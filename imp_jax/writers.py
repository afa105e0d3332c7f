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
from typing import Protocol


class MetricWriter(Protocol):
    """Receives named scalars at integer steps."""

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        """Records every ``name: value`` of ``values`` at ``step``."""

    def close(self) -> None:
        """Flushes and releases the writer."""


class TensorBoardWriter:
    """Event files in ``logdir`` (created on the first write), through tensorboardX."""

    def __init__(self, logdir: str | Path) -> None:
        self.logdir = Path(logdir)
        self._writer = None

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        if self._writer is None:
            from tensorboardX import SummaryWriter  # imported only by runs that write

            self._writer = SummaryWriter(str(self.logdir))
        for name, value in values.items():
            self._writer.add_scalar(name, float(value), int(step))
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
