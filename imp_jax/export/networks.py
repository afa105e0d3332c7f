"""An exported network: a masked model's kept weights as a smaller dense network (``compact``)
or with sparse kernels (``bcoo``), its forward pass, and its file.

The forward pass follows :mod:`imp_jax.core.models`' layer conventions and constants (its
BatchNorm epsilon, convolution padding and layer names) and :mod:`imp_jax.core.augment`'s
normalisation; it cannot be the Flax modules themselves, whose widths are one per stage, while a
compact network's differ from layer to layer and a ``bcoo`` one multiplies sparse kernels.
"""


from __future__ import annotations

import dataclasses
import functools
import io
import json
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse

from imp_jax.core import augment, models
from imp_jax.run.rundir import RunDirError, write_atomic

PyTree = Any
FORMATS = ("compact", "bcoo")
_DIMENSIONS = ("NHWC", "HWIO", "NHWC")


class ExportError(RunDirError):
    """A model cannot be exported as asked; the message says why."""


@dataclasses.dataclass(frozen=True)
class Exported:
    """An exported network.

    Attributes:
      arrays: flat ``{"layer/name": array}``; kernels are dense (``compact``) or BCOO (``bcoo``).
      meta: JSON-able: ``format``, ``arch`` (``fcn`` or ``resnet``), ``layers`` (FCN) or
        ``blocks`` (ResNet: ``[name, stride, has_shortcut]``), ``normalisation`` (``[mean, std]``
        per channel for uint8 inputs, or None), ``shape`` (:func:`shape_of`), ``weights``
        (``kept`` and ``total`` kernel weights of the source, ``stored`` kernel entries of the
        export) and ``source`` (``run``, ``level``, ``replicate``; None where unknown).
    """

    arrays: dict[str, Any]
    meta: dict[str, Any]

    def predict(self, x: jax.Array) -> jax.Array:
        """The logits (N, classes) of a batch ``x`` (jitted; compiled once per input shape):
        what the dataset gives, raw uint8 pixels for an image run (standardised here with the
        run's statistics, ``meta["normalisation"]``), the points themselves otherwise.

        Raises:
          ValueError: an image export given anything but uint8 pixels (already standardised
            inputs would be standardised twice).
        """
        if self.meta["normalisation"] is not None and np.asarray(x).dtype != np.uint8:
            raise ValueError(f"this export takes raw uint8 pixels, as the dataset gives them "
                             f"(it standardises them itself), got {np.asarray(x).dtype}")
        return _predictor(json.dumps(_static(self.meta), sort_keys=True))(self.arrays, x)

    @property
    def shape(self) -> str:
        return self.meta["shape"]


def _static(meta: Mapping[str, Any]) -> dict[str, Any]:
    """What the compiled function depends on besides the arrays' shapes."""
    return {k: meta[k] for k in ("format", "arch", "layers", "blocks", "normalisation")
            if k in meta}


# -- reading the model's layers ------------------------------------------------------------------


def architecture(params: PyTree) -> str:
    """``"fcn"`` or ``"resnet"``, from the layer names of :mod:`imp_jax.core.models`.

    Raises:
      ExportError: the params are of another model.
    """
    names = set(params)
    if "output" in names and names - {"output"} and all(
            re.fullmatch(r"hidden_\d+", n) for n in names - {"output"}):
        return "fcn"
    if {"stem_conv", "stem_bn", "output"} <= names and all(
            models.RESNET_BLOCK.match(n) for n in names - {"stem_conv", "stem_bn", "output"}):
        return "resnet"
    raise ExportError(f"only the FCN and ResNet models can be exported; these params have the "
                      f"layers {sorted(names)}")


def _fcn_layers(params: PyTree) -> list[str]:
    hidden = sorted((n for n in params if n != "output"), key=lambda n: int(n.split("_")[1]))
    return [*hidden, "output"]


def _resnet_blocks(params: PyTree) -> list[list[Any]]:
    """``[name, stride, has_shortcut]`` per block, in order (the strides of models.ResNet)."""
    blocks = sorted((tuple(map(int, models.RESNET_BLOCK.match(n).groups())), n) for n in params
                    if models.RESNET_BLOCK.match(n))
    return [[n, 2 if s > 0 and b == 0 else 1, "shortcut_conv" in params[n]]
            for (s, b), n in blocks]


def _np(tree: PyTree) -> PyTree:
    return jax.tree_util.tree_map(np.asarray, tree)


def _kernels(params: PyTree, masks: PyTree) -> dict[str, np.ndarray]:
    """The masked kernels by layer path (``"stage_0_block_0/conv_0"``)."""
    out = {}
    for path, (p, m) in _flat(params, masks).items():
        if path.endswith("/kernel"):
            out[path.removesuffix("/kernel")] = np.where(m, p, 0).astype(np.float32)
    return out


def _flat(params: PyTree, masks: PyTree) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    flat_p, _ = jax.tree_util.tree_flatten_with_path(_np(params))
    flat_m = jax.tree_util.tree_leaves(_np(masks))
    return {"/".join(str(k.key) for k in path): (p, m)
            for (path, p), m in zip(flat_p, flat_m, strict=True)}


def weight_counts(masks: PyTree) -> dict[str, int]:
    """``kept`` and ``total`` kernel weights (every leaf with ndim >= 2) of a mask."""
    kernels = [np.asarray(m) for m in jax.tree_util.tree_leaves(masks) if np.ndim(m) >= 2]
    return {"kept": int(sum(m.sum() for m in kernels)),
            "total": int(sum(m.size for m in kernels))}


def _batch_norm(params: PyTree, model_state: PyTree, name: str) -> dict[str, np.ndarray]:
    """A BatchNorm layer (running statistics) as ``(x - mean) * mul + bias``, as Flax computes
    it."""
    *parents, leaf = name.split("/")
    p, s = params, model_state["batch_stats"]
    for key in parents:
        p, s = p[key], s[key]
    p, s = p[leaf], s[leaf]
    mul = np.asarray(jax.lax.rsqrt(jnp.asarray(s["var"]) + models.BN_EPSILON)
                     * jnp.asarray(p["scale"]))
    return {"mean": np.asarray(s["mean"], np.float32), "mul": mul,
            "bias": np.asarray(p["bias"], np.float32)}


# -- compaction ----------------------------------------------------------------------------------


def _compact_fcn(params: PyTree, masks: PyTree) -> dict[str, np.ndarray]:
    layers = _fcn_layers(params)
    kernels = _kernels(params, masks)
    ks = [kernels[n] for n in layers]
    bs = [np.asarray(params[n].get("bias", np.zeros(k.shape[1])), np.float32)
          for n, k in zip(layers, ks, strict=True)]
    # Forward: which units depend on the input; the others' constants go into the next bias.
    varies = [np.ones(ks[0].shape[0], bool)]
    constant = np.zeros(ks[0].shape[0], np.float32)
    biases = []
    for i, (k, b) in enumerate(zip(ks, bs, strict=True)):
        biases.append(b + constant @ k)
        if i < len(ks) - 1:
            varies.append(((k != 0) & varies[i][:, None]).any(0))
            constant = np.where(varies[i + 1], 0.0, np.maximum(biases[i], 0.0)).astype(np.float32)
    # Backward: a varying unit is kept when a kept weight leads from it to a kept unit.
    keep = [np.ones(ks[-1].shape[1], bool)]
    for i in range(len(ks) - 1, 0, -1):
        keep.insert(0, ((ks[i] != 0) & keep[0][None, :]).any(1) & varies[i])
    keep.insert(0, varies[0])
    arrays = {}
    for i, name in enumerate(layers):
        arrays[f"{name}/kernel"] = ks[i][keep[i]][:, keep[i + 1]]
        arrays[f"{name}/bias"] = biases[i][keep[i + 1]]
    return arrays


def _resnet_arrays(params: PyTree, masks: PyTree, model_state: PyTree,
                   compact: bool) -> dict[str, np.ndarray]:
    kernels = _kernels(params, masks)
    convs = ["stem_conv", *(f"{b}/{c}" for b, _, short in _resnet_blocks(params)
                            for c in ("conv_0", "conv_1", *(["shortcut_conv"] if short else [])))]
    arrays = {}
    for name in convs:
        arrays[f"{name}/kernel"] = kernels[name]
        *parent, conv = name.split("/")
        bn = "/".join([*parent, models.RESNET_BN_OF[conv]])
        for key, value in _batch_norm(params, model_state, bn).items():
            arrays[f"{bn}/{key}"] = value
    arrays["output/kernel"] = kernels["output"]
    arrays["output/bias"] = np.asarray(params["output"].get(
        "bias", np.zeros(kernels["output"].shape[1])), np.float32)
    if compact:
        for block, _, _ in _resnet_blocks(params):
            k0, k1 = arrays[f"{block}/conv_0/kernel"], arrays[f"{block}/conv_1/kernel"]
            bn = {key: arrays[f"{block}/bn_0/{key}"] for key in ("mean", "mul", "bias")}
            constant = np.asarray(jax.nn.relu((0.0 - bn["mean"]) * bn["mul"] + bn["bias"]))
            varies = (k0 != 0).any((0, 1, 2))
            keep = (k1 != 0).any((0, 1, 3)) & (varies | (constant != 0))
            arrays[f"{block}/conv_0/kernel"] = k0[..., keep]
            arrays[f"{block}/conv_1/kernel"] = k1[:, :, keep, :]
            for key, value in bn.items():
                arrays[f"{block}/bn_0/{key}"] = value[keep]
    return arrays


def shape_of(meta: Mapping[str, Any], arrays: Mapping[str, Any]) -> str:
    """The network's widths: ``784-61-10`` for an FCN (input, hidden, classes); for a ResNet
    ``C-stem-inner:out-...-classes``, each block's inner (``conv_0``) and output channels."""
    dims = {name.removesuffix("/kernel"): a.shape for name, a in arrays.items()
            if name.endswith("/kernel")}
    if meta["arch"] == "fcn":
        first, *_ = dims[meta["layers"][0]]
        return "-".join(str(d) for d in (first, *(dims[n][-1] for n in meta["layers"])))

    def channels(name: str) -> tuple[int, int]:
        shape = dims[name]
        if len(shape) == 4:  # dense HWIO kernel
            return shape[2], shape[3]
        return shape[0] // 9, shape[1]  # a BCOO 3x3 conv over patches

    stem_in, stem_out = channels("stem_conv")
    blocks = [f"{channels(b + '/conv_0')[1]}:{channels(b + '/conv_1')[1]}"
              for b, _, _ in meta["blocks"]]
    return "-".join([str(stem_in), str(stem_out), *blocks, str(dims["output"][1])])


def _finish(arrays: dict[str, Any], fmt: str, arch: str, params: PyTree, masks: PyTree,
            meta: Mapping[str, Any] | None) -> Exported:
    full = {"format": fmt, "arch": arch, "normalisation": None,
            "source": {"run": None, "level": None, "replicate": None}, **(meta or {})}
    full["format"], full["arch"] = fmt, arch
    if arch == "fcn":
        full["layers"] = _fcn_layers(params)
    else:
        full["blocks"] = _resnet_blocks(params)
    if fmt == "bcoo":
        arrays = {name: _to_bcoo(a) if name.endswith("/kernel") else a
                  for name, a in arrays.items()}
    stored = sum(int(a.nse) if isinstance(a, sparse.BCOO) else a.size
                 for name, a in arrays.items() if name.endswith("/kernel"))
    full["weights"] = {**weight_counts(masks), "stored": stored}
    full["shape"] = shape_of(full, arrays)
    return Exported({k: a if isinstance(a, sparse.BCOO) else jnp.asarray(a)
                     for k, a in arrays.items()}, full)


def _to_bcoo(kernel: np.ndarray) -> sparse.BCOO:
    """A kernel as a sparse matrix: dense (in, out); conv HWIO as (C * kh * kw, out), the
    feature order of ``lax.conv_general_dilated_patches``."""
    if kernel.ndim == 4:
        kernel = kernel.transpose(2, 0, 1, 3).reshape(-1, kernel.shape[3])
    # From numpy, not BCOO.fromdense: that compiles once per kernel shape.
    indices = np.argwhere(kernel != 0).astype(np.int32)
    return sparse.BCOO((jnp.asarray(kernel[tuple(indices.T)]), jnp.asarray(indices)),
                       shape=kernel.shape, indices_sorted=True, unique_indices=True)


def compact(params: PyTree, masks: PyTree, model_state: PyTree | None = None, *,
            meta: Mapping[str, Any] | None = None) -> Exported:
    """The compact export of one replicate's masked model (see the module docstring).

    Args:
      params, masks: the model's params and masks (no replicate axis).
      model_state: the model's other variables (a ResNet's ``batch_stats``).
      meta: ``normalisation`` and ``source`` to record (see :class:`Exported`).

    Raises:
      ExportError: the model is neither an FCN nor a ResNet.
    """
    arch = architecture(params)
    arrays = (_compact_fcn(params, masks) if arch == "fcn"
              else _resnet_arrays(params, masks, model_state or {}, compact=True))
    return _finish(arrays, "compact", arch, params, masks, meta)


def bcoo(params: PyTree, masks: PyTree, model_state: PyTree | None = None, *,
         meta: Mapping[str, Any] | None = None) -> Exported:
    """The BCOO export of one replicate's masked model: kept kernels as sparse matrices.

    Arguments and errors as :func:`compact`.
    """
    arch = architecture(params)
    if arch == "fcn":
        arrays = {}
        for name, kernel in _kernels(params, masks).items():
            arrays[f"{name}/kernel"] = kernel
            arrays[f"{name}/bias"] = np.asarray(params[name].get(
                "bias", np.zeros(kernel.shape[1])), np.float32)
    else:
        arrays = _resnet_arrays(params, masks, model_state or {}, compact=False)
    return _finish(arrays, "bcoo", arch, params, masks, meta)


EXPORTERS: dict[str, Callable[..., Exported]] = {"compact": compact, "bcoo": bcoo}


# -- prediction ----------------------------------------------------------------------------------


def _conv(arrays: Mapping[str, Any], name: str, x: jax.Array, stride: int, size: int,
          sparse_kernels: bool) -> jax.Array:
    padding = ((models.conv_padding(size),) * 2,) * 2
    kernel = arrays[f"{name}/kernel"]
    if not sparse_kernels:
        return jax.lax.conv_general_dilated(x, kernel, (stride, stride), padding,
                                            dimension_numbers=_DIMENSIONS)
    patches = jax.lax.conv_general_dilated_patches(x, (size, size), (stride, stride), padding,
                                                   dimension_numbers=_DIMENSIONS)
    n, h, w, f = patches.shape
    return (patches.reshape(-1, f) @ kernel).reshape(n, h, w, -1)


def _bn(arrays: Mapping[str, Any], name: str, x: jax.Array) -> jax.Array:
    return (x - arrays[f"{name}/mean"]) * arrays[f"{name}/mul"] + arrays[f"{name}/bias"]


def _forward(static: Mapping[str, Any], arrays: Mapping[str, Any], x: jax.Array) -> jax.Array:
    if static["normalisation"] is not None:
        x = augment.normalise(x, *static["normalisation"])
    x = x.astype(jnp.float32)
    if static["arch"] == "fcn":
        x = x.reshape(x.shape[0], -1)
        for i, name in enumerate(static["layers"]):
            x = x @ arrays[f"{name}/kernel"] + arrays[f"{name}/bias"]
            x = jax.nn.relu(x) if i < len(static["layers"]) - 1 else x
        return x
    conv = functools.partial(_conv, arrays, sparse_kernels=static["format"] == "bcoo")
    x = jax.nn.relu(_bn(arrays, "stem_bn", conv("stem_conv", x, 1, 3)))
    for block, stride, shortcut in static["blocks"]:
        y = jax.nn.relu(_bn(arrays, f"{block}/bn_0", conv(f"{block}/conv_0", x, stride, 3)))
        y = _bn(arrays, f"{block}/bn_1", conv(f"{block}/conv_1", y, 1, 3))
        if shortcut:
            x = _bn(arrays, f"{block}/shortcut_bn", conv(f"{block}/shortcut_conv", x, stride, 1))
        x = jax.nn.relu(y + x)
    x = jnp.mean(x, axis=(1, 2))
    return x @ arrays["output/kernel"] + arrays["output/bias"]


@functools.cache  # one compiled function per structure, shared by exports of the same network
def _predictor(static_json: str) -> Callable[[Mapping[str, Any], jax.Array], jax.Array]:
    return jax.jit(functools.partial(_forward, json.loads(static_json)))


# -- files ---------------------------------------------------------------------------------------


def check_out(directory: str | Path, fmt: str, *, overwrite: bool = False) -> Path:
    """Checks, before any work, that ``<directory>/<fmt>.npz`` can be written; returns its path.

    Raises:
      ExportError: ``directory`` is a file or lies under one, or cannot be made or written
        into, or (unless ``overwrite``) the file is there already.
    """
    directory = Path(directory)
    path = directory / f"{fmt}.npz"
    above = next(p for p in (directory, *directory.parents) if p.exists())
    if not above.is_dir():
        raise ExportError(f"--out: cannot write into {directory}: {above} is a file, not a "
                          f"folder; give a folder")
    try:  # a folder made and removed: what the OS allows, where root ignores the mode bits
        os.rmdir(tempfile.mkdtemp(dir=above, prefix=".imp_jax_export."))
    except OSError as e:
        raise ExportError(f"--out: cannot write into {directory}: {above} is not writable "
                          f"({e.strerror}); give another folder") from e
    if path.exists() and not overwrite:
        raise _exists(path)
    return path


def _exists(path: Path) -> ExportError:
    return ExportError(f"--out: {path} exists (an earlier export); give another --out, or "
                       f"--overwrite to replace it")


def save(exported: Exported, directory: str | Path, *, overwrite: bool = True) -> Path:
    """Writes ``exported`` as ``<directory>/<format>.npz`` (replaced atomically, or with
    ``overwrite=False`` only created); returns its path. BCOO kernels are stored as their
    ``data`` and ``indices``.

    Raises:
      ExportError: the file cannot be written (see :func:`check_out`, to ask before exporting),
        or it exists and ``overwrite`` is False.
    """
    arrays = {"meta": np.asarray(json.dumps(exported.meta))}
    shapes = {}
    for name, a in exported.arrays.items():
        if isinstance(a, sparse.BCOO):
            arrays[f"{name}#data"], arrays[f"{name}#indices"] = map(np.asarray, (a.data,
                                                                                 a.indices))
            shapes[name] = list(a.shape)
        else:
            arrays[name] = np.asarray(a)
    arrays["bcoo_shapes"] = np.asarray(json.dumps(shapes))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path = check_out(directory, exported.meta["format"], overwrite=overwrite)
    try:  # not replace=True unless asked: another export may have written it since the check
        written = write_atomic(path, buffer.getvalue(), replace=overwrite)
    except RunDirError as e:
        raise ExportError(str(e)) from e
    if not written:
        raise _exists(path)
    return path


def load(path: str | Path) -> Exported:
    """Reads a file written by :func:`save`; needs neither the run directory nor the model.

    Raises:
      ExportError: the file is missing or not an export.
    """
    try:
        with np.load(path, allow_pickle=False) as f:
            files = {k: f[k] for k in f.files}
        meta, shapes = json.loads(str(files.pop("meta"))), json.loads(str(files.pop(
            "bcoo_shapes")))
    except (OSError, ValueError, KeyError) as e:
        raise ExportError(f"{path} is not a readable export ({type(e).__name__}: {e})") from e
    arrays = {name: jnp.asarray(a) for name, a in files.items() if "#" not in name}
    for name, shape in shapes.items():
        arrays[name] = sparse.BCOO((jnp.asarray(files[f"{name}#data"]),
                                    jnp.asarray(files[f"{name}#indices"])), shape=tuple(shape))
    return Exported(arrays, meta)
