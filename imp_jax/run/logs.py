"""Log lines of the command-line tools and of a run's ``log.txt``: one format, level tags for
warnings and errors, and the libraries' own chatter kept out.

Only the records a run already handles are silenced: INFO records of Orbax, tensorflow-datasets
and JAX's backend set-up (the run says what it does itself), Orbax's notices that a reader opened
checkpoints read-only (as it asked), and asyncio's echoes of Orbax futures whose error was
already reported as one line (and the same coroutines, when the interpreter collects them at
exit). A user's own ``logging`` or ``absl.logging`` records pass.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

# Loggers whose INFO records the tools do not show (their warnings still pass).
QUIET = ("orbax", "tensorflow_datasets", "jax._src.xla_bridge", "jax._src.compiler")
# Modules whose records reach the ``absl`` logger (tensorflow-datasets logs through absl).
_QUIET_PATHS = ("/orbax/", "/tensorflow_datasets/", "/etils/")
# What Orbax says when it is asked to open checkpoints read-only.
_READ_ONLY_NOTICES = ("read_only=True", "directory is read only")


class Formatter(logging.Formatter):
    """``HH:MM:SS message`` for INFO, ``HH:MM:SS WARNING: message`` (ERROR, ...) otherwise;
    with ``dates`` the full date and time, for log files."""

    def __init__(self, dates: bool = False) -> None:
        super().__init__("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S" if dates else "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.levelno == logging.INFO:
            return text
        stamp = self.formatTime(record, self.datefmt)
        return f"{stamp} {record.levelname}: {text[len(stamp) + 1:]}"


def keep(record: logging.LogRecord) -> bool:
    """False for the library records the tools silence (see the module docstring)."""
    message = record.getMessage()
    if record.name == "asyncio" and "exception was never retrieved" in message:
        return False
    if "/orbax/" in record.pathname and any(n in message for n in _READ_ONLY_NOTICES):
        return False
    if record.levelno >= logging.WARNING:
        return True
    if any(record.name == q or record.name.startswith(q + ".") for q in QUIET):
        return False
    return not (record.name == "absl" and any(p in record.pathname for p in _QUIET_PATHS))


@contextlib.contextmanager
def to_file(path: Path) -> Iterator[logging.Handler]:
    """Appends every record that reaches the root logger to ``path`` while the block runs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setFormatter(Formatter(dates=True))
    handler.addFilter(keep)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        handler.close()


def to_stderr(level: int = logging.INFO) -> None:
    """Sends the root logger's records of ``level`` and above to stderr in the tools' format (and
    only there), for processes that have no command-line set-up of their own (cluster jobs)."""
    handler = logging.StreamHandler()
    handler.setFormatter(Formatter(dates=True))
    handler.addFilter(keep)
    logging.basicConfig(level=level, handlers=[handler], force=True)


def quiet_unraisable(unraisable: sys.UnraisableHookArgs) -> None:
    """``sys.unraisablehook`` that drops the errors of Orbax's abandoned read coroutines (their
    failure is already reported as one line) and passes every other to Python's own hook."""
    code = getattr(unraisable.object, "cr_code", None)
    if code is not None and "/orbax/" in code.co_filename:
        return
    sys.__unraisablehook__(unraisable)
