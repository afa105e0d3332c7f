"""Pruned networks that run faster: compacted and sparse (BCOO) exports of a masked model.

A masked model computes with its full dense kernels, pruned weights set to zero; an export
computes the same logits with less work:

- ``compact``: a smaller dense network. A hidden unit whose kept input weights all come from
  units that do not depend on the input outputs a constant, ``relu(bias + constant inputs)``;
  that constant is folded into the next layer's bias and the unit dropped. A unit that reaches
  nothing (no kept weight to a unit that is kept) is dropped too. In an FCN this applies to every
  hidden unit; the input pixels and the logits are kept, so a compact 784-300-10 network is
  784-H-10.
- ``bcoo``: the same network with every kept kernel held as a
  :class:`jax.experimental.sparse.BCOO` matrix (convolutions as a sparse matrix over image
  patches), everything else dense.

ResNets (:class:`imp_jax.core.models.ResNet`): the channels of the residual stream (the stem's,
every block's output, the output layer's inputs) are tied together by the residual additions: a
stream channel can only be dropped if it is dead in every block it passes through, so these
channels are kept as they are. Only each block's inner channels (the outputs of ``conv_0``, the
inputs of ``conv_1``) are untied: one is dropped when it reaches nothing, or when it takes no
kept input and its constant output ``relu(BatchNorm(0))`` is 0. An inner channel with no kept
input but a non-zero constant is kept: ``conv_1`` pads its input with zeros, so the constant's
contribution varies near the image border and is no per-channel bias to fold. BatchNorm layers
(running statistics) are held as per-channel ``(x - mean) * mul + bias``, Flax's own arithmetic.
Other architectures (VGG, DenseNet) are not exported.

An :class:`Exported` network is a pytree of arrays and a JSON-able ``meta`` (architecture,
structure, where it came from, weight counts); ``predict(x)`` is jitted and takes inputs as the
run's dataset holds them (uint8 images are normalised as in training). :func:`save` writes one
``.npz`` file that :func:`load` reads back without the run directory or the model code.

Typical use::

    [source] = export.read_level(run_dir, level=15, replicate=0)
    net = export.compact(source.params, source.masks, source.model_state, meta=source.meta)
    export.save(net, out_dir)                  # out_dir/compact.npz
    logits = export.load(out_dir / "compact.npz").predict(x_test)
"""

from imp_jax.export.networks import (
    EXPORTERS,
    FORMATS,
    Exported,
    ExportError,
    architecture,
    bcoo,
    check_out,
    compact,
    load,
    save,
    shape_of,
    weight_counts,
)
from imp_jax.export.runs import (
    Source,
    check_request,
    compact_shapes,
    export_run,
    read_level,
    resolve_level,
    stored_config,
)

__all__ = ["EXPORTERS", "FORMATS", "ExportError", "Exported", "Source", "architecture", "bcoo",
           "check_out", "check_request", "compact", "compact_shapes", "export_run", "load",
           "read_level", "resolve_level", "save", "shape_of", "stored_config", "weight_counts"]
