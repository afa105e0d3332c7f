"""Reproduces the study: runs (or finds finished) its sweeps, then prints the paper's tables
beside ours, with a verdict per row.

    python -m experiments.reproduce [--scale=smoke|cpu|full] [--only=CLAIM,...] [--out=DIR]
    python -m experiments.reproduce --scale=full --launcher=slurm --workers=16 \
        --slurm.partition=gpu
    python -m experiments.reproduce --scale=cpu --report_only   (tables of what has finished)

Claims: sdd, widths, mixtures, uncertainty, calibration (``imp_jax/study/reproduce.py``); scales and
their cuts: ``configs/reproduce.py``. The sweeps live in ``<out>/<sweep>/`` (default ``out``:
``runs/reproduce-<scale>``), so the same command resumes an interrupted study and, once every
point is finished, trains nothing and prints the report again. ``--launcher`` and ``--workers``
work as for ``experiments.sweep``. Written into ``out``: ``REPORT.md``, ``report.html``, one CSV
per claim, ``summary.csv`` and ``figures/``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from absl import flags

from configs import reproduce as scales
from experiments import cli
from imp_jax.run import driver
from imp_jax.run.config import ConfigError
from imp_jax.study import claims as claims_lib
from imp_jax.study import reproduce as reproduce_lib
from imp_jax.study import sweep as sweep_lib

_SCALE = flags.DEFINE_enum("scale", "cpu", list(scales.SCALES), "smoke: minutes, the pipeline "
                           "only; cpu: about 90 minutes on 2 CPU cores (--launcher=local "
                           "--workers=2), every claim decided; full: the paper's settings.")
_ONLY = flags.DEFINE_list("only", [], "Claims to run and report (default all): "
                          + ", ".join(claims_lib.CLAIMS) + ".")
_OUT = flags.DEFINE_string("out", "", "Output directory (default runs/reproduce-<scale>).")
_REPORT_ONLY = flags.DEFINE_bool("report_only", False, "Train nothing: report what has finished.")
_DATA_DIR = flags.DEFINE_string("data_dir", "", "tensorflow-datasets data_dir for every dataset.")
_MNIST = flags.DEFINE_string("mnist_manual_dir", "", "Directory of the MNIST archives.")
_CIFAR = flags.DEFINE_string("cifar10_manual_dir", "", "Directory of the CIFAR-10 archive.")
_JOBS = cli.define_worker_flags("this process", " per sweep")


def claims() -> list[str]:
    """The claims of ``--only`` (all by default), in the report's order.

    Raises:
      ConfigError: an unknown claim.
    """
    unknown = [c for c in _ONLY.value if c not in claims_lib.CLAIMS]
    if unknown:
        raise ConfigError(f"--only: unknown claim {unknown[0]!r}; expected "
                          f"{', '.join(claims_lib.CLAIMS)}")
    return [c for c in claims_lib.CLAIMS if not _ONLY.value or c in _ONLY.value]


def data_fields() -> dict[str, dict[str, str]]:
    """The data paths given on the command line, by dataset."""
    common = {"data.data_dir": _DATA_DIR.value} if _DATA_DIR.value else {}
    return {name: {**common, **({"data.manual_dir": d} if d else {})}
            for name, d in (("mnist", _MNIST.value), ("cifar10", _CIFAR.value))}


def main(argv: list[str]) -> int:
    logging.getLogger(driver.__name__).setLevel(logging.WARNING)  # one line per point
    scale = _SCALE.value
    out = Path(_OUT.value or os.path.join("runs", f"reproduce-{scale}"))

    def study() -> tuple[str, bool]:
        chosen = claims()
        sweeps = [s for s in scales.plan(scale, data_fields()) if set(s.claims) & set(chosen)]
        if _REPORT_ONLY.value:  # a directory holding another sweep is refused all the same
            for s in sweeps:
                sweep_lib.check_sweep_dir(out / s.key, s.config, sweep_lib.points(s.config))
        finished = (reproduce_lib.all_finished(sweeps, out) if _REPORT_ONLY.value else
                    reproduce_lib.run(sweeps, out, **_JOBS.launch()))
        tables, figures = reproduce_lib.claim_tables(sweeps, out, chosen)
        progress = reproduce_lib.progress_line(sweeps, out)
        path = reproduce_lib.write_report(tables, figures, out, scale=scale, progress=progress,
                                          reduced={s.key: reproduce_lib.reduction(s)
                                                   for s in sweeps})
        logging.info("report: %s (and report.html, CSV files, figures/)%s", path,
                     "" if finished else "; the study is not finished: rerun to continue it")
        return path.read_text(), finished

    result, code = cli.call(study)
    if code is not None:
        return code
    print(result[0])
    return 0


if __name__ == "__main__":
    cli.main(main, _JOBS.slurm)
