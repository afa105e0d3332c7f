"""What every command-line entry point shares."""

import logging
import sys
from collections.abc import Callable
from typing import Any

from absl import logging as absl_logging

from imp_jax import config as config_lib
from imp_jax import imp
from imp_jax.rundir import RunDirError


def setup_logging() -> None:
    """Concise timestamped progress lines; the libraries' own INFO chatter silenced."""
    absl_logging.get_absl_handler().setFormatter(
        logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    absl_logging.set_verbosity(absl_logging.INFO)
    for noisy in ("absl", "jax._src.xla_bridge", "orbax", "tensorflow_datasets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Orbax restores leaves in concurrent asyncio tasks and futures: when a checkpoint is
    # unreadable, one error is reported (as one line) and the others' would be dumped at exit.
    logging.getLogger("asyncio").addFilter(
        lambda record: "exception was never retrieved" not in record.getMessage())


def call(fn: Callable[[], Any]) -> tuple[Any, int | None]:
    """Runs ``fn``; a failure the user can act on becomes one stderr line and an exit code.

    Returns ``(result, None)``, or ``(None, code)``: 2 for a bad config, run directory or a
    diverged run, 128 + signal for a run stopped by SIGTERM/SIGINT (after its checkpoint).
    """
    try:
        return fn(), None
    except (config_lib.ConfigError, RunDirError, imp.TrainingDivergedError) as e:
        print(f"error: {e}", file=sys.stderr)
        return None, 2
    except imp.RunInterruptedError as e:
        print(f"interrupted: {e}", file=sys.stderr)
        return None, 128 + e.signum
