"""The run directory: its layout, the config it belongs to, and crash-safe writes.

    <workdir>/config.json     the full resolved config
    <workdir>/metrics.jsonl   one row per (replicate, level)
    <workdir>/summary.json    best pruned level, effective parameters, dense vs best
    <workdir>/checkpoints/    Orbax checkpoints
    <workdir>/plots/          figures

Every file is replaced atomically (write to a temporary file, fsync, rename) or appended in one
write, so a kill at any moment leaves either the old or the new content, never half of it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ml_collections

from imp_jax import config as config_lib


class RunDirError(RuntimeError):
    """The run directory cannot be used: another config's run, unreadable or unwritable."""


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """Turns an OSError (disk full, a file where a directory should be, ...) while writing
    ``path`` into a :class:`RunDirError` naming it."""
    try:
        yield
    except OSError as e:
        raise RunDirError(f"cannot write {path}: {e}") from e


def write_atomic(path: Path, text: str) -> None:
    """Replaces ``path`` with ``text`` atomically.

    Raises:
      RunDirError: ``path`` cannot be written; its old content, if any, is kept.
    """
    with _writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def write_json(path: Path, obj: Any) -> None:
    """Writes ``obj`` as indented JSON, atomically."""
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


class RunDir:
    """Paths and files of one run directory."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).resolve()
        self.config = self.root / "config.json"
        self.metrics = self.root / "metrics.jsonl"
        self.summary = self.root / "summary.json"
        self.checkpoints = self.root / "checkpoints"
        self.plots = self.root / "plots"

    def claim(self, config: ml_collections.ConfigDict) -> None:
        """Creates the directory for ``config``, or checks an existing one belongs to it.

        Raises:
          RunDirError: the directory holds a run of a config with other results-determining
            fields (see :data:`imp_jax.config.NON_IDENTITY_FIELDS` for the ones that may change),
            is a file, or cannot be written.
        """
        if self.config.exists():
            try:
                old = config_lib.from_json_dict(json.loads(self.config.read_text()))
            except (ValueError, TypeError, KeyError, AttributeError) as e:
                raise RunDirError(f"{self.config} is unreadable ({e}); is this a run "
                                  f"directory of imp_jax?") from e
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
        elif self.root.exists() and any(self.root.iterdir()):
            raise RunDirError(f"{self.root} is not empty and has no config.json: not an imp_jax "
                              f"run directory")
        write_json(self.config, config_lib.to_json_dict(config))

    def read_rows(self) -> list[dict[str, Any]]:
        """The metrics rows; a truncated last line (a write cut short) is dropped from the file."""
        if not self.metrics.exists():
            return []
        text = self.metrics.read_text()
        lines = text.splitlines()
        rows = []
        for i, line in enumerate(lines):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                if i != len(lines) - 1 or text.endswith("\n"):
                    raise RunDirError(f"{self.metrics}: line {i + 1} is not valid JSON") from e
                logging.warning("dropping a truncated last line of %s", self.metrics)
                write_atomic(self.metrics, "".join(line + "\n" for line in lines[:-1]))
        return rows

    def append_rows(self, rows: list[dict[str, Any]]) -> None:
        """Appends rows as JSON lines in one write, then fsyncs.

        Raises:
          RunDirError: the write failed (e.g. the disk is full); a partly written last line is
            dropped by the next :meth:`read_rows`.
        """
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
        with _writing(self.metrics), open(self.metrics, "a") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
