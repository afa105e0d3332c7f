"""Runs (or resumes) one IMP run.

    python -m experiments.run --config=configs/mnist_noise.py [--workdir=DIR]
    python -m experiments.run --config=configs/mnist_noise.py:smoke --config.imp.levels=3

Every config field can be overridden as ``--config.a.b=value``. Without ``--workdir`` the run
directory is ``runs/<name>-<hash of the results-determining fields>``, so running the same command
again resumes the run, or reports it finished.
"""

from __future__ import annotations

import logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax
from absl import app, flags
from ml_collections import config_flags

from experiments import cli
from imp_jax import config as config_lib
from imp_jax import imp, plots

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/NAME.py[:arg]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "", "Run directory (default: derived from the config).")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Call jax.distributed.initialize() first: one process per host (TPU "
    "pods and SLURM/Open MPI clusters are detected; elsewhere give the three flags below).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", "", "host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes (hosts).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
flags.mark_flags_as_required(["config"])


def default_workdir(config) -> str:
    """``runs/<name>-<fingerprint>``: the same config always maps to the same directory."""
    return os.path.join("runs", f"{config.name}-{config_lib.fingerprint(config)}")


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with a bad flag or config override reported as one ``error:`` line
    (exit 2) instead of absl's usage text or a traceback."""
    try:
        rest = flags.FLAGS(argv)
        _CONFIG.value.keys()  # a config file that failed to load raises only when first used
        return rest
    except (flags.Error, AttributeError, KeyError, OSError) as e:
        # ml_collections raises a bare AttributeError/KeyError for an override of a field that
        # does not exist; name the field the way config validation does.
        unknown = [name for name in (a.split("=", 1)[0].removeprefix("--") for a in argv[1:])
                   if name.startswith("config.")
                   and name.removeprefix("config.") not in config_lib.RULES]
        if unknown and isinstance(e, (AttributeError, KeyError)):
            message = f"{unknown[0]}: unknown field"
        else:  # errors from loading the config file end with the cause, after a traceback
            message = [line.strip() for line in str(e).splitlines() if line.strip()][-1]
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    cli.setup_logging()
    config = _CONFIG.value
    if _DISTRIBUTED.value or _COORDINATOR.value:
        jax.distributed.initialize(_COORDINATOR.value or None, _NUM_PROCESSES.value,
                                   _PROCESS_ID.value)

    def start() -> tuple[str, dict]:
        config_lib.validate(config)  # before anything is created on disk
        workdir = _WORKDIR.value or default_workdir(config)
        logging.info("run directory: %s", workdir)
        return workdir, imp.run(config, workdir)

    result, code = cli.call(start)
    if code is not None:
        return code
    workdir, summary = result
    if summary["best_level"] is None:
        logging.info("no best pruned model yet (%s); dense test error %.4f",
                     summary["landmarks"]["status"], summary["dense_test_error"])
    else:
        logging.info("best pruned level %d: %d weights, test error %.4f (dense %.4f)",
                     summary["best_level"], summary["effective_parameters"],
                     summary["best_test_error"], summary["dense_test_error"])
    if jax.process_count() > 1:
        logging.info("draw the figures with: python -m experiments.report %s", workdir)
        return 0
    try:
        runner = imp.open_run(workdir)
        try:
            written = plots.write_run_plots(runner)
        finally:
            runner.ckpt.close()
        logging.info("wrote %d figure files to %s", len(written), runner.dir.plots)
    except Exception:  # the run is saved and finished: a figure must not turn it into a failure
        logging.exception("drawing the figures failed; retry with: python -m experiments.report "
                          "%s", workdir)
    return 0


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
