"""The run directory: its layout, the config it belongs to, its lock, and crash-safe writes.

    <workdir>/config.json     the full resolved config
    <workdir>/metrics.jsonl   one row per (replicate, level)
    <workdir>/summary.json    best pruned level, effective parameters, dense vs best
    <workdir>/status.json     where a training process is: level, epoch, time left
    <workdir>/log.txt         everything the runs in it printed, appended across resumes
    <workdir>/tb/             TensorBoard event files
    <workdir>/checkpoints/    Orbax checkpoints
    <workdir>/plots/          figures

Every file is replaced atomically (write to a temporary file, fsync, rename) or appended in one
write, so a kill at any moment leaves either the old or the new content, never half of it. Files
get the mode the umask gives (readable by colleagues on a shared cluster where it allows).

A run's default directory is ``runs/<name>-<fingerprint>`` (:func:`default_dir`); one that an
earlier version named otherwise for the same config is found and used instead.

One process at a time trains in a run directory: it holds an exclusive ``flock`` on
``<workdir>/.lock`` (released by the OS when the process ends, however it ends), and a second
trainer is refused at once with the holder's pid, host and start time. On NFS, Linux emulates
``flock`` with POSIX byte-range locks, which NFSv4 servers honour across hosts; the lock of a
host that died is released when its lease expires (typically 90 s). Readers (reports, sweep
status) write nothing; asking who holds the lock takes a shared lock for an instant, which a
trainer starting at that moment waits out.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import logging
import os
import re
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ml_collections

from imp_jax.run import config as config_lib

log = logging.getLogger(__name__)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# The mode a file created with open() would get; mkstemp's files are 0600 until given it.
FILE_MODE = 0o666 & ~_umask()


class RunDirError(RuntimeError):
    """The run directory cannot be used: another config's run, unreadable or unwritable."""


class RunDirBusyError(RunDirError):
    """Another process trains in the run directory (holds its lock)."""


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """Turns an OSError (disk full, a file where a directory should be, ...) while writing
    ``path`` into a :class:`RunDirError` naming it."""
    try:
        yield
    except OSError as e:
        raise RunDirError(f"cannot write {path}: {e}") from e


def write_atomic(path: Path, text: str | bytes, *, replace: bool = True) -> bool:
    """Replaces ``path`` with ``text`` atomically; with ``replace=False`` only creates it, and
    leaves a file already there as it is.

    Returns:
      Whether ``path`` now holds ``text``.

    Raises:
      RunDirError: ``path`` cannot be written; its old content, if any, is kept.
    """
    with _writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb" if isinstance(text, bytes) else "w") as f:
                f.write(text)
                f.flush()
                os.fchmod(f.fileno(), FILE_MODE)
                os.fsync(f.fileno())
            if replace:
                os.replace(tmp, path)
                return True
            try:
                os.link(tmp, path)  # fails if the file exists: no other writer is overwritten
            except FileExistsError:
                return False
            return True
        finally:
            Path(tmp).unlink(missing_ok=True)


def write_json(path: Path, obj: Any, *, replace: bool = True) -> bool:
    """Writes ``obj`` as indented JSON, atomically (see :func:`write_atomic`)."""
    return write_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n", replace=replace)


def read_json(path: Path) -> Any:
    """The JSON content of ``path``, or None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def parse_rows(path: Path) -> tuple[list[dict[str, Any]], bool]:
    """The JSON rows of ``path`` (none if it is missing) and whether its last line is torn (cut
    short by a kill or a full disk: skipped, never rewritten here).

    Raises:
      RunDirError: a line other than an unterminated last one is not valid JSON.
    """
    if not path.exists():
        return [], False
    text = path.read_text()
    lines = text.splitlines()
    rows, torn = [], False
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            if i != len(lines) - 1 or text.endswith("\n"):
                raise RunDirError(f"{path}: line {i + 1} is not valid JSON") from e
            torn = True
    return rows, torn


def _try_lock(fd: int, tries: int = 5, pause_s: float = 0.02) -> bool:
    """Takes the exclusive lock of ``fd`` if no trainer holds it. A few tries, because a reader
    asking :meth:`RunDir.holder` holds a shared lock for an instant, and must not turn a
    trainer away."""
    for i in range(tries):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if i < tries - 1:
                time.sleep(pause_s)
    return False


class RunDir:
    """Paths and files of one run directory."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).resolve()
        self.config = self.root / "config.json"
        self.metrics = self.root / "metrics.jsonl"
        self.summary = self.root / "summary.json"
        self.status = self.root / "status.json"
        self.log = self.root / "log.txt"
        self.tb = self.root / "tb"
        self.checkpoints = self.root / "checkpoints"
        self.plots = self.root / "plots"
        self.lock_file = self.root / ".lock"

    # -- the config ------------------------------------------------------------------------

    def stored_config(self) -> ml_collections.ConfigDict | None:
        """The config of the run in this directory (laid over today's defaults), or None.

        Raises:
          RunDirError: ``config.json`` exists but does not hold a config.
        """
        if not self.config.exists():
            return None
        try:
            values = json.loads(self.config.read_text())
            if not isinstance(values, dict):
                raise TypeError(f"it holds a {type(values).__name__}, not a config")
            return config_lib.from_json_dict(values)
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
            raise RunDirError(f"{self.config} is unreadable ({e}); is this a run directory "
                              f"of imp_jax?") from e

    def check(self, config: ml_collections.ConfigDict) -> None:
        """Checks that this directory can hold a run of ``config``; writes nothing.

        Raises:
          RunDirError: the directory holds a run of a config with other results-determining
            fields (see :data:`imp_jax.run.config.NON_IDENTITY_FIELDS` for the ones that may
            change), is a file, or is not empty and has no ``config.json``.
        """
        old = self.stored_config()
        if old is not None:
            a, b = config_lib.identity(old), config_lib.identity(config)
            diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            if diff:
                shown = ", ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in diff[:5])
                raise RunDirError(
                    f"{self.root} holds a run of a different config ({shown}"
                    f"{', ...' if len(diff) > 5 else ''}); choose another --workdir or omit it "
                    f"to get a directory named after the config")
        elif self.root.exists() and not self.root.is_dir():
            raise RunDirError(f"{self.root} is a file, not a run directory; choose another "
                              f"--workdir")
        elif self.root.exists() and any(not p.name.startswith(".")  # the lock, temporaries
                                        for p in self.root.iterdir()):
            raise RunDirError(f"{self.root} is not empty and has no config.json: not an imp_jax "
                              f"run directory")

    def claim(self, config: ml_collections.ConfigDict, *, replace: bool = True) -> None:
        """:meth:`check`, then writes ``config.json`` (creating the directory); with
        ``replace=False`` only where there is none yet (the lock holder replaces it).

        Raises:
          RunDirError: see :meth:`check`; or the directory cannot be written.
        """
        self.check(config)
        write_json(self.config, config_lib.to_json_dict(config), replace=replace)

    # -- the lock --------------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Holds the directory's exclusive lock while the block runs.

        Raises:
          RunDirBusyError: another process holds it (the message names it).
          RunDirError: the lock file cannot be created.
        """
        with _writing(self.lock_file):
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            if not _try_lock(fd):
                holder = os.pread(fd, 4096, 0).decode(errors="replace").strip()
                raise RunDirBusyError(
                    f"{self.root} is in use by another process ({holder or 'unknown holder'}); "
                    f"wait for it to finish, or stop it first")
            started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {started}\n"
                      .encode(), 0)
            yield
        finally:
            os.close(fd)  # releases the lock

    def holder(self) -> str | None:
        """Who holds the lock now (pid, host, start time), or None. It asks by taking a shared
        lock for an instant; a trainer taking the lock meanwhile retries (:func:`_try_lock`)."""
        if not self.lock_file.exists():
            return None
        with open(self.lock_file) as f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return f.read().strip() or "unknown holder"
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
            return None

    # -- the rows --------------------------------------------------------------------------

    def read_rows(self) -> list[dict[str, Any]]:
        """The metrics rows; a torn last line (a write cut short) is skipped, not removed."""
        return parse_rows(self.metrics)[0]

    def repair_rows(self) -> tuple[list[dict[str, Any]], bool]:
        """For the lock holder only: drops a torn last line and rows repeated for a (level,
        replicate), keeping the first, rewriting the file if anything was dropped; returns
        the rows and whether anything was."""
        rows, torn = parse_rows(self.metrics)
        seen: set[tuple[int, int]] = set()
        unique = []
        for row in rows:
            key = (row["level"], row["replicate"])
            if key not in seen:
                seen.add(key)
                unique.append(row)
        if torn:
            log.warning("dropping a truncated last line of %s", self.metrics)
        if len(unique) < len(rows):
            log.warning("dropping %d repeated rows of %s", len(rows) - len(unique),
                        self.metrics)
        repaired = torn or len(unique) < len(rows)
        if repaired:
            write_atomic(self.metrics, "".join(json.dumps(r, sort_keys=True) + "\n"
                                               for r in unique))
        return unique, repaired

    def write_summary(self, summary: dict[str, Any]) -> bool:
        """Rewrites ``summary.json`` unless it already holds ``summary``; returns whether it
        changed."""
        if summary == read_json(self.summary):
            return False
        return write_json(self.summary, summary)

    def append_rows(self, rows: list[dict[str, Any]]) -> None:
        """Appends rows as JSON lines in one write, then fsyncs.

        Raises:
          RunDirError: the write failed (e.g. the disk is full); a partly written last line is
            dropped by the next :meth:`repair_rows`.
        """
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
        with _writing(self.metrics), open(self.metrics, "a") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


def earlier_names(root: Path, name: str, legacy: str) -> list[Path]:
    """The directories of ``root`` named ``<name>-<10 hex digits>``, the one of fingerprint
    ``legacy`` first: where default directories of ``name`` may lie under earlier names."""
    pattern = re.compile(rf"{re.escape(name)}-[0-9a-f]{{10}}")
    found = [p for p in root.iterdir() if pattern.fullmatch(p.name)] if root.is_dir() else []
    return sorted(found, key=lambda p: (p.name != f"{name}-{legacy}", p.name))


def default_dir(config: ml_collections.ConfigDict, root: str | os.PathLike = "runs") -> Path:
    """The default run directory of ``config``: ``<root>/<name>-<fingerprint>``
    (:func:`imp_jax.run.config.fingerprint`).

    Where that does not exist but a directory named with an earlier fingerprint of the name
    (:func:`imp_jax.run.config.legacy_fingerprint`, or any ``<name>-<hash>``) holds a run of the
    same results-determining fields, that one: a new version of the code resumes or reports
    the run instead of starting it again beside it.
    """
    path = Path(root) / f"{config.name}-{config_lib.fingerprint(config)}"
    if path.exists():
        return path
    wanted = config_lib.identity(config)
    for old in earlier_names(Path(root), config.name, config_lib.legacy_fingerprint(config)):
        try:
            stored = RunDir(old).stored_config()
        except RunDirError:
            continue
        if stored is not None and config_lib.identity(stored) == wanted:
            log.info("the run of this config is in %s (named by an earlier version)", old)
            return old
    return path
