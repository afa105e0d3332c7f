"""What every command-line entry point shares."""

import logging

from absl import logging as absl_logging


def setup_logging() -> None:
    """Concise timestamped progress lines; the libraries' own INFO chatter silenced."""
    absl_logging.get_absl_handler().setFormatter(
        logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    absl_logging.set_verbosity(absl_logging.INFO)
    for noisy in ("absl", "jax._src.xla_bridge", "orbax", "tensorflow_datasets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
