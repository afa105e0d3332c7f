"""Benchmarks behind the figures quoted in the README and the issues
(:mod:`experiments.harness.benchmarks`).

    python -m experiments.benchmark                 # everything
    python -m experiments.benchmark --only=prune    # one section (or several: --only=epoch,cnn)
"""

from __future__ import annotations

import jax
from absl import app, flags

from experiments.harness import benchmarks

_ONLY = flags.DEFINE_list("only", [], "Sections to run (default: all).")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed runs per figure (median reported).")
_MNIST_DIR = flags.DEFINE_string("mnist_manual_dir", "../shared/data/mnist",
                                 "Folder with the MNIST archives (section 'level').")
_DATA_DIR = flags.DEFINE_string("data_dir", "", "tensorflow-datasets data_dir for MNIST "
                                "(default: a temporary one, prepared afresh).")
_SPARSE_RUN = flags.DEFINE_string("sparse_run", "", "A finished FCN run to export in section "
                                  "'sparse' (default: a short IMP run of configs/mnist_noise.py).")
_SPARSE_LEVEL = flags.DEFINE_string("sparse_level", "best", "The level of --sparse_run to "
                                    "export: 'best' or a number.")


def main(argv: list[str]) -> None:
    del argv
    unknown = set(_ONLY.value) - set(benchmarks.SECTIONS)
    if unknown:
        raise app.UsageError(f"--only: unknown sections {sorted(unknown)}; "
                             f"choose from {sorted(benchmarks.SECTIONS)}")
    settings = benchmarks.Settings(_REPEATS.value, _MNIST_DIR.value, _DATA_DIR.value,
                                   _SPARSE_RUN.value, _SPARSE_LEVEL.value)
    print(f"jax {jax.__version__} on {jax.devices()[0].platform} x{jax.device_count()}")
    for name, fn in benchmarks.SECTIONS.items():
        # sharded_epoch is scaling's per-process part: run only when asked for.
        if name in _ONLY.value or (not _ONLY.value and name != "sharded_epoch"):
            fn(settings)


if __name__ == "__main__":
    app.run(main)
