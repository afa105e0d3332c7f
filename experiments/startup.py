"""The first thing every entry point does: until the work starts (and installs its own handling,
:mod:`imp_jax.run.signals`), SIGTERM and SIGINT end the process at once with one line, not a
KeyboardInterrupt traceback. Imports nothing heavy, so that it can run before JAX is imported."""

from __future__ import annotations

import os
import signal
import sys


def exit_on_signals() -> None:
    """Installs the start-up handlers of SIGTERM and SIGINT (exit status 128 + N)."""

    def handler(signum: int, _frame: object) -> None:
        sys.stderr.write(f"interrupted: stopped by signal {signum} during start-up, before any "
                         f"work; nothing was lost\n")
        sys.stderr.flush()
        os._exit(128 + signum)

    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, handler)
