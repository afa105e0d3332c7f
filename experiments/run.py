"""Runs (or resumes) one IMP run.

    python -m experiments.run --config=configs/mnist_noise.py [--workdir=DIR]
    python -m experiments.run --config=configs/mnist_noise.py:smoke --config.imp.levels=3
    python -m experiments.run --config=configs/mnist_noise.py --print_config
    python -m experiments.run --workdir=DIR     (continues the run in DIR with its own config)

Every config field can be overridden as ``--config.a.b=value`` (the fields, their defaults and
documentation: ``imp_jax/run/config.py``, or ``--print_config``). Without ``--workdir`` the run
directory is ``runs/<name>-<hash of the results-determining fields>``, so running the same
command again resumes the run, or reports it finished; a level whose checkpoint is missing or
damaged is trained again (its metrics rows are kept).
"""

from __future__ import annotations

import logging

import jax
import ml_collections
from absl import flags
from ml_collections import config_flags

from experiments import cli
from imp_jax.run import config as config_lib
from imp_jax.run import driver, logs
from imp_jax.run.rundir import RunDir, RunDirError, default_dir
from imp_jax.study import report

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file (configs/NAME.py[:arg]); override fields as --config.a.b=value "
    "(every field is documented in imp_jax/run/config.py; --print_config lists them).",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "", "Run directory (default: derived from the config).")
_PRINT = flags.DEFINE_bool("print_config", False, "Print the resolved config, the run directory "
                           "and what running would do; then exit without training or writing.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Call jax.distributed.initialize() first: one process per host (TPU "
    "pods and SLURM/Open MPI clusters are detected; elsewhere give the three flags below).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", "", "host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes (hosts).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")


def default_workdir(config) -> str:
    """``runs/<name>-<fingerprint>`` (:func:`imp_jax.run.rundir.default_dir`): the same config
    always maps to the same directory, also the directory an earlier version named for it."""
    return str(default_dir(config))


def stored_config(workdir: str) -> ml_collections.ConfigDict:
    """The config of the run in ``workdir``: what ``--workdir`` without ``--config`` continues.

    Raises:
      ConfigError: no ``--workdir`` either.
      RunDirError: ``workdir`` holds no run.
    """
    if not workdir:
        raise config_lib.ConfigError("give --config=configs/NAME.py[:ARG], or --workdir=DIR of "
                                     "an existing run to continue it with its own config")
    config = RunDir(workdir).stored_config()
    if config is None:
        raise RunDirError(f"{workdir} holds no run (no config.json); give "
                          f"--config=configs/NAME.py[:ARG]")
    return config


def main(argv: list[str]) -> int:
    if _DISTRIBUTED.value or _COORDINATOR.value:
        jax.distributed.initialize(_COORDINATOR.value or None, _NUM_PROCESSES.value,
                                   _PROCESS_ID.value)

    def start() -> tuple[str, dict]:
        config = _CONFIG.value if _CONFIG.value is not None else stored_config(_WORKDIR.value)
        config_lib.validate(config)  # before anything is created on disk
        workdir = _WORKDIR.value or default_workdir(config)
        if _PRINT.value:
            print(config_lib.describe(config))
            print(f"\nrun directory: {workdir}\n{workdir} {driver.plan(config, workdir)}")
            return workdir, {}
        return workdir, driver.run(config, workdir)  # it logs the run directory

    result, code = cli.call(start)
    if code is not None or _PRINT.value:
        return code or 0
    workdir, summary = result
    if jax.process_index() > 0:
        return 0
    with logs.to_file(RunDir(workdir).log):  # the run's result lines in its log.txt too
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
            report.draw_run_figures(workdir)
        except Exception:  # the run is saved and finished: a figure must not make it a failure
            cli.log_failure("drawing the figures", f"python -m experiments.report {workdir}")
    return 0


if __name__ == "__main__":
    cli.main(main, _CONFIG)
