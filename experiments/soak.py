"""Soak test of resuming: kill a run at random moments, resume it, compare with a clean run.

    python -m experiments.soak --config=configs/mixture_linear.py:smoke --kills=10 \
        [--config.a.b=value ...] [--seed=0] [--workdir=DIR] [--nosignals]

What it does and how it compares the runs: :mod:`experiments.harness.soak`. The last line reads e.g.
``soak: kills survived 10/10, rows lost 0, duplicates 0, masks equal: yes``; the exit status is
1 if anything differs.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import jax
from absl import flags
from absl import logging as absl_logging
from ml_collections import config_flags

from experiments import cli
from experiments.harness import soak

# The config flag parses and checks --config and its overrides; they are passed on verbatim.
config_flags.DEFINE_config_file("config", None, "Config file (configs/NAME.py[:arg]).",
                                lock_config=True)
_KILLS = flags.DEFINE_integer("kills", 10, "SIGKILLs that must land on unfinished work.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the kill moments.")
_WORKDIR = flags.DEFINE_string("workdir", "", "Folder for the reference and resumed runs "
                               "(default: a temporary one, deleted when everything matches).")
_SIGNALS = flags.DEFINE_boolean("signals", True, "Also stop a start once with SIGTERM and once "
                                "with SIGINT.")
flags.mark_flags_as_required(["config"])


def main(argv: list[str]) -> int:
    # This process only compares checkpoints: keep it off the accelerators its runs need.
    jax.config.update("jax_platforms", "cpu")
    absl_logging.set_verbosity(absl_logging.WARNING)  # Orbax logs every restore at INFO
    config_args = [a for a in sys.argv[1:] if a.startswith("--config")]
    base = Path(_WORKDIR.value or tempfile.mkdtemp(prefix="imp_soak-")).resolve()
    base.mkdir(parents=True, exist_ok=True)
    try:
        report = soak.soak(config_args, base, _KILLS.value, _SEED.value, _SIGNALS.value)
    except soak.SoakError as e:
        print(f"soak: error: {e}", file=sys.stderr)
        return 1
    print("\n".join(report.lines()), flush=True)
    if not report.ok:
        print(f"soak: runs and logs kept in {base}")
        return 1
    if not _WORKDIR.value:
        shutil.rmtree(base)
    return 0


if __name__ == "__main__":
    cli.main(main)
