"""Exports a pruned model of a run as a smaller (compact) or sparse (BCOO) network.

    python -m experiments.export RUN_DIR [--level=best|N] [--replicate=R] \
        --format=compact|bcoo --out=DIR [--overwrite]

Reads the level's checkpoint (read-only; the dataset is not needed), writes ``DIR/<format>.npz``
(:func:`imp_jax.export.save`; read it back with ``imp_jax.export.load(path).predict(x)``) and
prints the network's shape, its weight counts and the file. A bad run directory, level,
replicate, format or ``--out`` (a file, under one, or holding an export of that format already,
unless ``--overwrite``) stops it with one ``error:`` line (exit status 2), before any work.
"""

from __future__ import annotations

from absl import app, flags

from experiments import cli
from imp_jax import export

_LEVEL = flags.DEFINE_string("level", "best", "Level to export: 'best' (the best pruned level) "
                                              "or its number.")
_REPLICATE = flags.DEFINE_integer("replicate", 0, "Replicate to export.")
_FORMAT = flags.DEFINE_string("format", "compact", f"One of {export.FORMATS}.")
_OUT = flags.DEFINE_string("out", "", "Directory to write <format>.npz into.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an export of the same format "
                                                   "already in --out.")


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        raise app.UsageError("give one run directory")
    if not _OUT.value:
        raise app.UsageError("give --out=DIR")

    def run() -> str:
        export.check_request(argv[1], _FORMAT.value, _LEVEL.value)
        export.check_out(_OUT.value, _FORMAT.value, overwrite=_OVERWRITE.value)
        net = export.export_run(argv[1], _FORMAT.value, _LEVEL.value, _REPLICATE.value)
        path = export.save(net, _OUT.value, overwrite=_OVERWRITE.value)
        source, weights = net.meta["source"], net.meta["weights"]
        return (f"exported level {source['level']} replicate {source['replicate']} as "
                f"{net.meta['format']}: shape={net.shape} weights={weights['kept']}/"
                f"{weights['total']} stored_kernel_entries={weights['stored']} -> {path}")

    return cli.print_call(run)


if __name__ == "__main__":
    cli.main(main, arguments=True)
