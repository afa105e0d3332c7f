"""One IMP run in one run directory: its config, the driver, evaluation, checkpoints,
progress, signals and logs."""
