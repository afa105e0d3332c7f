"""Command-line entry points (``python -m experiments.NAME``)."""

import sys

# While ``python -m experiments.NAME`` locates its module, sys.argv[0] is "-m" (see runpy): this
# runs then, before the entry point imports JAX, so that start-up honours SIGTERM/SIGINT at once.
# Importing the package from elsewhere (tests, notebooks) changes nothing.
if sys.argv[:1] == ["-m"]:
    import os

    from experiments import startup

    startup.exit_on_signals()
    # TensorFlow (dataset preparation only) logs its C++ start-up chatter otherwise.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
