"""What every command-line entry point shares: logging, flag parsing, one error-handling path."""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import Callable
from typing import Any

import jax
from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from imp_jax.run import config as config_lib
from imp_jax.run import driver, logs, signals
from imp_jax.run.rundir import RunDirError
from imp_jax.study import cluster, report
from imp_jax.study import sweep as sweep_lib

# The failures a user can act on, each printed as one ``error:`` line (exit status 2).
USER_ERRORS = (config_lib.ConfigError, RunDirError, driver.TrainingDivergedError,
               report.ReportError, cluster.LaunchError)


@dataclasses.dataclass(frozen=True)
class WorkerFlags:
    """``--launcher``, ``--workers`` and ``--slurm``: the points as submitit worker jobs."""

    launcher: flags.FlagHolder
    workers: flags.FlagHolder
    slurm: flags.FlagHolder

    def launch(self) -> dict[str, Any]:
        """The keywords of :func:`imp_jax.study.cluster.launch` they give."""
        return {"launcher": self.launcher.value, "workers": self.workers.value,
                "slurm": self.slurm.value}


def define_worker_flags(default: str, workers: str) -> WorkerFlags:
    """Defines the worker flags; ``default`` says what runs the points without ``--launcher``,
    ``workers`` how many jobs ``--workers`` counts."""
    return WorkerFlags(
        flags.DEFINE_enum("launcher", None, list(cluster.LAUNCHERS), "Run the points as "
                          "--workers submitit jobs: on SLURM (submit and return) or as "
                          f"processes here (and wait). Default: {default}."),
        flags.DEFINE_integer("workers", 1, f"How many worker jobs --launcher starts{workers}."),
        config_flags.DEFINE_config_dict(
            "slurm", cluster.slurm_config(), "SLURM settings of the worker jobs, as "
            "--slurm.partition=gpu --slurm.gpus_per_node=1 --slurm.timeout_min=1440 (see "
            "imp_jax/study/cluster.py)."))


def setup_logging() -> None:
    """Concise timestamped lines, warnings and errors tagged; the libraries' own chatter that
    the tools already report is left out (:func:`imp_jax.run.logs.keep`)."""
    handler = absl_logging.get_absl_handler()
    handler.setFormatter(logs.Formatter())
    handler.addFilter(logs.keep)
    absl_logging.set_verbosity(absl_logging.INFO)
    sys.unraisablehook = logs.quiet_unraisable


def main(fn: Callable[[list[str]], int | None], config_flag: flags.FlagHolder | None = None, *,
         arguments: bool = False) -> None:
    """Runs the entry point ``fn(argv)`` as an absl app: the flags parsed by :func:`parse_flags`,
    arguments other than flags refused unless ``arguments``, then the tools' logging set up."""

    def start(argv: list[str]) -> int | None:
        if len(argv) > 1 and not arguments:
            raise app.UsageError(f"unexpected arguments: {argv[1:]}")
        setup_logging()
        return fn(argv)

    app.run(start, flags_parser=lambda argv: parse_flags(argv, config_flag))


def parse_flags(argv: list[str], config_flag: flags.FlagHolder | None = None) -> list[str]:
    """absl's flag parsing, with a bad flag or config override reported as one ``error:`` line
    (exit 2) instead of absl's usage text or a traceback. A config field given twice keeps its
    last value (absl would append a repeated tuple override to the first)."""
    argv = last_override_wins(argv)
    try:
        rest = flags.FLAGS(argv)
        if config_flag is not None and config_flag.value is not None:  # None: not given
            config_flag.value.keys()  # a config file that failed to load raises when first used
        return rest
    except (flags.Error, AttributeError, KeyError, OSError, SyntaxError) as e:
        # ml_collections raises a bare AttributeError/KeyError for an override of a field that
        # does not exist; name the field the way config validation does.
        unknown = [name for name in (a.split("=", 1)[0].removeprefix("--") for a in argv[1:])
                   if name.startswith("config.") and _unknown(name.removeprefix("config."))]
        if unknown and isinstance(e, (AttributeError, KeyError)):
            message = f"{unknown[0]}: unknown field"
        elif isinstance(e, flags.UnrecognizedFlagError) and e.flagname in unknown:
            # no config file either, but the field is wrong whichever is given
            message = (f"{e.flagname}: unknown field (and overrides need "
                       f"--config=configs/NAME.py[:ARG])")
        elif isinstance(e, flags.UnrecognizedFlagError) and e.flagname.startswith("config."):
            # absl defines the override flags only once a config file is given
            message = (f"--{e.flagname}: give --config=configs/NAME.py[:ARG] to override its "
                       f"fields")
        elif isinstance(e, SyntaxError):
            message = f"the config file {e.filename} has a syntax error at line {e.lineno}: {e.msg}"
        else:  # errors from loading the config file end with the cause, after a traceback
            message = [line.strip() for line in str(e).splitlines() if line.strip()][-1]
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def _unknown(field: str) -> bool:
    """Whether ``field`` (dotted, without ``config.``) is neither a config field nor a sweep's."""
    if field.startswith("sweep."):
        return field.removeprefix("sweep.") not in (*sweep_lib.AXES, "overrides")
    return field not in config_lib.FIELDS


def _takes_value(field: str) -> bool:
    """Whether ``--config.<field>`` takes a value (absl's booleans do not: ``--config.x``)."""
    if field.startswith("sweep."):
        return True
    return field in config_lib.FIELDS and not isinstance(config_lib.FIELDS[field].default, bool)


def joined(argv: list[str]) -> list[str]:
    """``argv`` with absl's space form ``--config.x VALUE`` written ``--config.x=VALUE`` (for
    fields that take a value), so that the two forms count alike."""
    out, i = [], 0
    while i < len(argv):
        arg = argv[i]
        if (arg.startswith("--config.") and "=" not in arg and i + 1 < len(argv)
                and _takes_value(arg.removeprefix("--config."))):
            out.append(f"{arg}={argv[i + 1]}")
            i += 2
        else:
            out.append(arg)
            i += 1
    return out


def last_override_wins(argv: list[str]) -> list[str]:
    """``argv`` with every ``--config.x=...`` given more than once kept only where it last is
    (in either of absl's forms, see :func:`joined`)."""
    argv = joined(argv)
    last = {a.split("=", 1)[0]: i for i, a in enumerate(argv) if a.startswith("--config.")}
    return [a for i, a in enumerate(argv)
            if not a.startswith("--config.") or last[a.split("=", 1)[0]] == i]


def _out_of_memory(e: BaseException) -> str | None:
    """One line for an allocation failure, or None for any other error."""
    text = str(e)
    if isinstance(e, MemoryError) or "RESOURCE_EXHAUSTED" in text or "Out of memory" in text:
        first = next((line.strip() for line in text.splitlines() if line.strip()), type(e).__name__)
        return f"out of memory: {first[:300]}; use fewer replicates, a smaller batch or model"
    return None


def call(fn: Callable[[], Any]) -> tuple[Any, int | None]:
    """Runs ``fn`` with SIGTERM/SIGINT honoured within seconds (:mod:`imp_jax.run.signals`); a
    failure the user can act on becomes one stderr line and an exit code.

    Returns ``(result, None)``, or ``(None, code)``: 2 for a bad config, run directory, report,
    a diverged run or an allocation failure, 128 + signal for a run stopped by SIGTERM/SIGINT.
    """
    try:
        with signals.stop_on_signals():
            return fn(), None
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return None, 2
    except driver.RunInterruptedError as e:
        print(f"interrupted: {e}", file=sys.stderr)
        return None, 128 + e.signum
    except (MemoryError, jax.errors.JaxRuntimeError) as e:
        message = _out_of_memory(e)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return None, 2


def print_call(fn: Callable[[], str]) -> int:
    """Runs ``fn`` as :func:`call` does and prints the text it returns; returns the exit
    code."""
    text, code = call(fn)
    if code is None:
        print(text)
    return code or 0


def log_failure(what: str, retry: str) -> None:
    """Logs the traceback of a failed optional step (figures, tables) of finished work."""
    logging.exception("%s failed; retry with: %s", what, retry)
