"""Pruning masks as pytrees.

A *mask* is a pytree with the structure and shapes of the params and boolean leaves: ``True`` keeps
a weight, ``False`` prunes it. Leaves that may not be pruned (biases, normalisation parameters,
excluded layers) stay all-true. Which leaves are prunable is described by a hashable
:class:`PrunableSpec`, so it can be a static argument of ``jax.jit``.

Everything here is a pure function over pytrees and works on any params tree (Flax, Equinox,
nested dicts): this module imports only jax, numpy and optax. Leaves that are not arrays (an
Equinox module's activation functions, say) are passed through: their mask leaf is ``None``, as in
``equinox.filter(model, equinox.is_array)``.

Typical use::

    spec = masks.PrunableSpec(exclude=(r"Dense_2/",))     # keep the output layer dense
    mask = masks.ones_like(params)
    tx = masks.wrap_optax(optax.sgd(0.1, momentum=0.9), mask)
    ...                                                     # train with tx as any optax optimizer
    mask = masks.prune_global(params, mask, 0.2, spec)     # remove 20% of what remains
    params = masks.apply_mask(params, mask)
    opt_state = masks.set_mask(opt_state, mask)             # the optimizer's state is kept
    print(masks.summary(mask, spec))

A mask can be stored bit-packed, 8 times smaller (:func:`pack`, :func:`unpack`,
``wrap_optax(..., packed=True)``). Every function here that reads a mask takes a packed one as
well; the masks they return are unpacked.
"""

from __future__ import annotations

import dataclasses
import fractions
import functools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, NamedTuple, get_args

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = [
    "COUNTS", "DEFAULT_SPEC", "DISTRIBUTIONS", "Count", "Distribution", "LeafCount", "Mask",
    "MaskSummary", "MaskedOptState", "PackedLeaf", "PrunableSpec", "PyTree", "apply_mask",
    "check_mask", "count", "get_mask", "layer_sparsities", "leaf_paths", "masked_optimizer",
    "num_to_prune", "ones_like", "overlap", "pack", "prune_global", "prune_layerwise",
    "prune_random_global", "prune_random_layerwise", "prune_to", "set_mask", "step_size",
    "summary", "unpack", "wrap_optax",
]

PyTree = Any
Mask = PyTree

# Denominator bound when reading a pruning fraction as a rational p/q: the pruned count
# ceil(p * n / q) is then computed exactly in int32 inside jit, for any n < 2**31.
_MAX_DENOMINATOR = 10_000
# How many weights a pruning step removes: see num_to_prune.
Count = Literal["exact", "openlth"]
COUNTS: tuple[str, ...] = get_args(Count)
# How prune_to spreads a target sparsity over the prunable leaves.
Distribution = Literal["global", "uniform", "erk"]
DISTRIBUTIONS: tuple[str, ...] = get_args(Distribution)
_INT32_MAX = np.iinfo(np.int32).max


def _key_name(key: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def leaf_paths(tree: PyTree) -> list[str]:
    """Returns the ``/``-joined path of every leaf, in ``jax.tree_util.tree_leaves`` order.

    A Flax params dict ``{"Dense_0": {"kernel": ...}}`` gives ``"Dense_0/kernel"``; sequence
    entries give their index and dataclass fields their name.
    """
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return ["/".join(_key_name(k) for k in path) for path, _ in flat]


@dataclasses.dataclass(frozen=True)
class PrunableSpec:
    """Which leaves of a params tree may be pruned.

    A leaf is prunable when it has at least ``min_ndim`` dimensions (dense and conv kernels, not
    biases or normalisation scales) and its path (see :func:`leaf_paths`) matches none of the
    ``exclude`` regular expressions (``re.search``). Hashable, so it can be a static jit argument.

    Attributes:
      exclude: regular expressions of leaf paths never to prune, e.g. ``(r"Dense_2/",)``. Each must
        match at least one leaf that would otherwise be prunable.
      min_ndim: the smallest number of dimensions of a prunable leaf.
    """

    exclude: tuple[str, ...] = ()
    min_ndim: int = 2

    def __post_init__(self) -> None:
        if isinstance(self.exclude, str):
            raise ValueError(
                f"PrunableSpec.exclude must be a sequence of patterns, got the string "
                f"{self.exclude!r}; write exclude=({self.exclude!r},)")
        object.__setattr__(self, "exclude", tuple(self.exclude))
        if self.min_ndim < 1:
            raise ValueError(f"PrunableSpec.min_ndim must be >= 1, got {self.min_ndim}")
        for pattern in self.exclude:
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(f"PrunableSpec.exclude: invalid pattern {pattern!r}: {e}") from e

    def flags(self, tree: PyTree) -> list[bool]:
        """One flag per leaf (``tree_leaves`` order): True where the leaf is prunable.

        Raises:
          ValueError: if an exclusion pattern matches no otherwise-prunable leaf.
        """
        leaves = jax.tree_util.tree_leaves(tree)
        paths = leaf_paths(tree)
        candidates = [p for p, x in zip(paths, leaves, strict=True) if np.ndim(x) >= self.min_ndim]
        for pattern in self.exclude:
            if not any(re.search(pattern, p) for p in candidates):
                raise ValueError(
                    f"exclusion pattern {pattern!r} matches no prunable leaf; "
                    f"prunable leaves are {candidates}")
        return [
            np.ndim(x) >= self.min_ndim and not any(re.search(q, p) for q in self.exclude)
            for p, x in zip(paths, leaves, strict=True)
        ]

    def paths(self, tree: PyTree) -> list[str]:
        """The paths of the prunable leaves of ``tree``."""
        return [p for p, f in zip(leaf_paths(tree), self.flags(tree), strict=True) if f]

    def tree(self, tree: PyTree) -> PyTree:
        """A pytree of Python bools with ``tree``'s structure: True on prunable leaves."""
        return jax.tree_util.tree_unflatten(
            jax.tree_util.tree_structure(tree), self.flags(tree))


DEFAULT_SPEC = PrunableSpec()


def _is_array(x: Any) -> bool:
    # As equinox.is_array: Python scalars, functions and strings are not weights.
    return isinstance(x, (jax.Array, np.ndarray, np.generic, jax.ShapeDtypeStruct))


def _arrays_only(tree: PyTree) -> PyTree:
    """``tree`` with its non-array leaves replaced by ``None``: the structure of its mask."""
    return jax.tree_util.tree_map(lambda x: x if _is_array(x) else None, tree)


def ones_like(params: PyTree) -> Mask:
    """An all-true mask for ``params`` (nothing pruned); ``None`` for non-array leaves."""
    return jax.tree_util.tree_map(
        lambda x: jnp.ones(jnp.shape(x), dtype=bool) if _is_array(x) else None, params)


def check_mask(params: PyTree, mask: Mask) -> None:
    """Raises ValueError unless ``mask`` has ``params``'s tree structure, shapes and bool leaves.

    A non-array leaf of ``params`` must have ``None`` as its mask leaf (see :func:`ones_like`).
    A packed mask (:func:`pack`) is checked unpacked.
    """
    mask = unpack(mask)
    p_leaves, p_def = jax.tree_util.tree_flatten(params)
    try:
        m_leaves = p_def.flatten_up_to(mask)
    except (ValueError, TypeError):
        raise ValueError(
            f"mask tree structure does not match the params: expected {p_def}, "
            f"got {jax.tree_util.tree_structure(mask)}") from None
    for path, p, m in zip(leaf_paths(params), p_leaves, m_leaves, strict=True):
        if not _is_array(p):
            if m is not None:
                raise ValueError(f"mask leaf {path!r} must be None: the param is not an array "
                                 f"({type(p).__name__})")
            continue
        if not _is_array(m):
            raise ValueError(f"mask leaf {path!r} is {type(m).__name__}, expected a bool array")
        if jnp.shape(p) != jnp.shape(m):
            raise ValueError(
                f"mask leaf {path!r} has shape {jnp.shape(m)}, expected the param's "
                f"shape {jnp.shape(p)}")
        if jnp.result_type(m) != jnp.bool_:
            raise ValueError(f"mask leaf {path!r} has dtype {jnp.result_type(m)}, expected bool")


def apply_mask(params: PyTree, mask: Mask) -> PyTree:
    """Returns ``params`` with pruned entries set to exactly zero (dtypes preserved); non-array
    leaves are returned as they are."""
    mask = unpack(mask)
    check_mask(params, mask)
    return jax.tree_util.tree_map(
        lambda p, m: p if m is None else jnp.where(m, p, jnp.zeros_like(p)), params, mask)


# ---------------------------------------------------------------------------------------------
# Packed masks: one bit per weight instead of a byte.


@functools.partial(jax.tree_util.register_dataclass, data_fields=["bits"], meta_fields=["shape"])
@dataclasses.dataclass(frozen=True)
class PackedLeaf:
    """One mask leaf stored bit-packed: what :func:`pack` puts in place of a bool array.

    A pytree node whose only leaf is ``bits``; ``shape`` is static aux data, so a packed mask
    passes through ``jit``, ``vmap`` and ``lax`` control flow, and Orbax saves and restores it
    as it does any pytree of arrays. (``flax.serialization`` knows only the types registered
    with it: unpack first, or register this one with ``register_serialization_state``.)

    Attributes:
      bits: uint8 array of ``ceil(prod(shape) / 8)`` bytes, the leaf flattened row-major and
        packed big-endian as ``jnp.packbits`` does; under ``vmap`` of :func:`pack` it has the
        mapped axes in front.
      shape: the shape of the bool leaf (without the mapped axes).
    """

    bits: jax.Array
    shape: tuple[int, ...]


@functools.partial(jax.tree_util.register_dataclass, data_fields=["leaves"],
                   meta_fields=["treedef"])
@dataclasses.dataclass(frozen=True)
class _PackedTree:
    """How ``wrap_optax(..., packed=True)`` keeps its mask: the array leaves packed in a flat
    tuple, the mask's tree static. Flat, because :func:`pack` of a mask built from
    ``nnx.state`` puts a :class:`PackedLeaf` inside each ``nnx`` variable, and a variable holding
    a pytree does not survive ``nnx.Optimizer`` under ``nnx.jit``."""

    leaves: tuple[PackedLeaf, ...]
    treedef: jax.tree_util.PyTreeDef


def _is_packed(x: Any) -> bool:
    return isinstance(x, (PackedLeaf, _PackedTree))


def _pack_flat(mask: Mask) -> _PackedTree:
    leaves, treedef = jax.tree_util.tree_flatten(mask)
    return _PackedTree(tuple(pack(leaves)), treedef)


def pack(mask: Mask) -> Mask:
    """``mask`` with each bool array leaf stored bit-packed in a :class:`PackedLeaf` (8 times
    smaller); ``None`` and other non-array leaves, and leaves already packed, are kept as they
    are. Jittable; ``jax.vmap(pack)`` packs each replicate of a stacked mask on its own, so the
    result can be vmapped over as the mask could.

    Raises:
      ValueError: on an array leaf that is not bool.
    """

    def leaf(path: Any, m: Any) -> Any:
        if _is_packed(m) or not _is_array(m):
            return m
        if jnp.result_type(m) != jnp.bool_:
            raise ValueError(f"mask leaf {'/'.join(_key_name(k) for k in path)!r} has dtype "
                             f"{jnp.result_type(m)}, expected bool")
        return PackedLeaf(jnp.packbits(jnp.ravel(m)), tuple(int(d) for d in jnp.shape(m)))

    return jax.tree_util.tree_map_with_path(leaf, mask, is_leaf=_is_packed)


def _has_packed(mask: Mask) -> bool:
    return any(map(_is_packed, jax.tree_util.tree_leaves(mask, is_leaf=_is_packed)))


def _unpack_leaf(x: PackedLeaf | _PackedTree) -> Any:
    if isinstance(x, _PackedTree):
        return jax.tree_util.tree_unflatten(x.treedef, [_unpack_leaf(y) for y in x.leaves])
    bits = jnp.asarray(x.bits)
    # Leading axes (a vmapped pack, seen from outside the vmap) stay in front.
    flat = jnp.unpackbits(bits, axis=-1, count=math.prod(x.shape))
    return flat.astype(bool).reshape(bits.shape[:-1] + x.shape)


def unpack(packed: Mask) -> Mask:
    """The bool mask :func:`pack` packed, exactly; leaves that are not packed are kept, so an
    unpacked mask is returned as it is. Jittable and vmappable."""
    if not _has_packed(packed):
        return packed
    return jax.tree_util.tree_map(lambda x: _unpack_leaf(x) if _is_packed(x) else x, packed,
                                  is_leaf=_is_packed)


# ---------------------------------------------------------------------------------------------
# Counting.


def _prunable_leaves(mask: Mask, spec: PrunableSpec) -> tuple[list[str], list[jax.Array]]:
    mask = unpack(mask)
    flags = spec.flags(mask)
    pairs = [(p, m) for p, m, f in zip(leaf_paths(mask), jax.tree_util.tree_leaves(mask), flags,
                                       strict=True) if f]
    if not pairs:
        raise ValueError(
            f"nothing is prunable: no leaf has ndim >= {spec.min_ndim} outside the exclusions "
            f"{spec.exclude}; leaves are {leaf_paths(mask)}")
    return [p for p, _ in pairs], [m for _, m in pairs]


def _traced(leaves: Sequence[Any]) -> bool:
    return any(isinstance(x, jax.core.Tracer) for x in leaves)


def count(mask: Mask, spec: PrunableSpec = DEFAULT_SPEC) -> dict[str, Any]:
    """Counts remaining and total prunable weights, overall and per prunable leaf.

    Returns:
      ``{"remaining": int, "total": int, "sparsity": float, "per_leaf": {path: (remaining,
      total)}}``, plain Python numbers. Under a trace (jit, vmap), where the remaining counts are
      not known yet, the remaining counts are int32 scalars and the sparsity a float32 scalar;
      totals are Python ints either way (they depend on shapes only).
    """
    paths, leaves = _prunable_leaves(mask, spec)
    totals = [int(np.size(m)) for m in leaves]
    total = sum(totals)
    if _traced(leaves):
        kept = [jnp.sum(m, dtype=jnp.int32) for m in leaves]
        remaining = sum(kept)
        sparsity = (total - remaining).astype(jnp.float32) / total
    else:
        kept = [int(np.count_nonzero(np.asarray(m))) for m in leaves]
        remaining = sum(kept)
        sparsity = (total - remaining) / total
    return {"remaining": remaining, "total": total, "sparsity": sparsity,
            "per_leaf": dict(zip(paths, zip(kept, totals, strict=True), strict=True))}


@dataclasses.dataclass(frozen=True)
class LeafCount:
    """The remaining and total weights of one prunable leaf (see :func:`summary`)."""

    path: str
    remaining: int
    total: int

    @property
    def sparsity(self) -> float:
        """The fraction of the leaf's weights pruned."""
        return (self.total - self.remaining) / self.total if self.total else 0.0


@dataclasses.dataclass(frozen=True)
class MaskSummary:
    """Per-leaf and total counts of a mask's prunable weights; ``str()`` gives a table.

    Attributes:
      leaves: one :class:`LeafCount` per prunable leaf, in ``tree_leaves`` order.
    """

    leaves: tuple[LeafCount, ...]

    @property
    def remaining(self) -> int:
        """Prunable weights still in the mask."""
        return sum(c.remaining for c in self.leaves)

    @property
    def total(self) -> int:
        """All prunable weights."""
        return sum(c.total for c in self.leaves)

    @property
    def sparsity(self) -> float:
        """The fraction of the prunable weights pruned."""
        return (self.total - self.remaining) / self.total if self.total else 0.0

    def __str__(self) -> str:
        cells = [("leaf", "remaining", "total", "sparsity")]
        cells += [(c.path, str(c.remaining), str(c.total), f"{100 * c.sparsity:.2f}%")
                  for c in (*self.leaves, LeafCount("total", self.remaining, self.total))]
        widths = [max(len(row[j]) for row in cells) for j in range(4)]
        lines = ["  ".join([row[0].ljust(widths[0])] + [x.rjust(w) for x, w in
                                                         zip(row[1:], widths[1:], strict=True)])
                 for row in cells]
        return "\n".join([*lines[:-1], "-" * len(lines[0]), lines[-1]])


def summary(mask: Mask, spec: PrunableSpec = DEFAULT_SPEC) -> MaskSummary:
    """Per-leaf and total sparsity of the prunable weights of ``mask``, as plain integers.

    ``print(summary(mask))`` shows a table::

        leaf            remaining  total  sparsity
        Dense_0/kernel         13     24    45.83%
        Dense_1/kernel          4      8    50.00%
        ------------------------------------------
        total                  17     32    46.88%

    Raises:
      TypeError: under a trace (jit, vmap), where the counts are not known; use :func:`count`.
    """
    paths, leaves = _prunable_leaves(mask, spec)
    if _traced(leaves):
        raise TypeError("summary needs a concrete mask; under jit or vmap use masks.count")
    return MaskSummary(tuple(LeafCount(p, int(np.count_nonzero(np.asarray(m))), int(np.size(m)))
                             for p, m in zip(paths, leaves, strict=True)))


def overlap(a: Mask, b: Mask, spec: PrunableSpec = DEFAULT_SPEC) -> jax.Array:
    """Fraction of kept prunable weights the two masks share: ``|a & b| / |a | b|`` (Jaccard).

    1 for identical masks; for nested masks (a later IMP level inside an earlier one) it is the
    ratio of their sizes. Useful to compare tickets across levels or seeds.
    """
    a, b = unpack(a), unpack(b)
    check_mask(a, b)
    _, la = _prunable_leaves(a, spec)
    _, lb = _prunable_leaves(b, spec)
    inter = sum(jnp.sum(x & y, dtype=jnp.int32) for x, y in zip(la, lb, strict=True))
    union = sum(jnp.sum(x | y, dtype=jnp.int32) for x, y in zip(la, lb, strict=True))
    return jnp.where(union > 0, inter / jnp.maximum(union, 1), 1.0)


# ---------------------------------------------------------------------------------------------
# Selection: prune exactly k of the kept entries with the smallest scores.


def _check_fraction(fraction: float) -> fractions.Fraction:
    if not isinstance(fraction, (int, float)) or not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be a number in [0, 1), got {fraction!r}")
    return fractions.Fraction(fraction).limit_denominator(_MAX_DENOMINATOR)


def _num_to_prune(frac: fractions.Fraction, remaining: jax.Array) -> jax.Array:
    """``ceil(frac * remaining)``, exactly, in int32 (OpenLTH rounds up as well)."""
    p, q = frac.numerator, frac.denominator
    whole, rest = remaining // q, remaining % q
    return whole * p + (rest * p + q - 1) // q


def _magnitude_keys(params: PyTree) -> PyTree:
    """Order-preserving int32 keys for ``|w|``: the IEEE bit patterns of non-negative floats."""
    return jax.tree_util.tree_map(
        lambda w: jax.lax.bitcast_convert_type(jnp.abs(w).astype(jnp.float32), jnp.int32), params)


def _count_le(keys: Sequence[jax.Array], kept: Sequence[jax.Array], t: jax.Array) -> jax.Array:
    return sum(jnp.sum(m & (k <= t), dtype=jnp.int32) for k, m in zip(keys, kept, strict=True))


def _smallest_key_with_count(count_le: Callable[[jax.Array], jax.Array], k: jax.Array,
                             hi: int) -> jax.Array:
    """Smallest t in [0, hi] with ``count_le(t) >= k``, by bisection (no sort).

    Each step is one fused compare-and-count pass over the data; 31 passes over int32 keys cost far
    less than a full sort of millions of values on a CPU.
    """

    def body(_, lo_hi):
        lo, hi = lo_hi
        mid = (lo & hi) + ((lo ^ hi) >> 1)  # floor((lo + hi) / 2) without int32 overflow
        ok = count_le(mid) >= k
        return jnp.where(ok, lo, mid), jnp.where(ok, mid, hi)

    steps = max(1, int(hi + 1).bit_length())
    _, t = jax.lax.fori_loop(0, steps, body, (jnp.int32(-1), jnp.int32(hi)))
    return t


def _prune_smallest(keys: list[jax.Array], kept: list[jax.Array], k: jax.Array) -> list[jax.Array]:
    """New masks with exactly ``k`` more entries removed: the kept ones with the smallest keys.

    Ties at the threshold are broken by position (leaf order, then row-major), so the count is
    exact and the result deterministic.
    """
    t = _smallest_key_with_count(lambda x: _count_le(keys, kept, x), k, _INT32_MAX)
    below = [m & (key < t) for key, m in zip(keys, kept, strict=True)]
    ties = [m & (key == t) for key, m in zip(keys, kept, strict=True)]
    need = k - sum(jnp.sum(b, dtype=jnp.int32) for b in below)
    n_ties = sum(jnp.sum(x, dtype=jnp.int32) for x in ties)
    offsets = np.cumsum([0] + [int(np.size(x)) for x in ties[:-1]])
    positions = [jnp.arange(x.size, dtype=jnp.int32).reshape(x.shape) + int(o)
                 for x, o in zip(ties, offsets, strict=True)]

    def first_ties():
        # Only reached when some, but not all, tied entries must go.
        last = _smallest_key_with_count(lambda j: _count_le(positions, ties, j), need,
                                        int(offsets[-1] + ties[-1].size))
        return [tie & (pos <= last) for tie, pos in zip(ties, positions, strict=True)]

    take = jax.lax.cond(need < n_ties, first_ties, lambda: ties)
    return [m & ~(b | tk) for m, b, tk in zip(kept, below, take, strict=True)]


def _check_count(count: str) -> None:
    if count not in COUNTS:
        raise ValueError(f"count must be one of {COUNTS}, got {count!r}")


def _groups(mask: Mask, spec: PrunableSpec, layerwise: bool) -> list[list[int]]:
    """The groups of prunable leaves (indices in ``tree_leaves`` order) pruned together: all of
    them (global), or one each (layerwise). ValueError when nothing is prunable."""
    flags = spec.flags(mask)
    if not any(flags):
        raise ValueError(
            f"nothing to prune: no leaf has ndim >= {spec.min_ndim} outside the exclusions "
            f"{spec.exclude}; leaves are {leaf_paths(mask)}")
    idx = [i for i, f in enumerate(flags) if f]
    return [[i] for i in idx] if layerwise else [idx]


def _step(frac: fractions.Fraction, base: Any, count: str) -> Any:
    # ceil(frac * base), plus the reference code's one more; ints or int32 arrays alike.
    return _num_to_prune(frac, base) + (1 if count == "openlth" else 0)


def step_size(fraction: float, remaining: int, prunable: int, count: Count = "exact") -> int:
    """How many weights a global pruning step removes, from the counts alone: ``remaining``
    kernel weights in the mask (excluded ones included) and ``prunable`` of them (see
    :func:`num_to_prune`). Plain integers: for planning levels ahead without masks."""
    _check_count(count)
    return int(_step(_check_fraction(fraction), remaining if count == "openlth" else prunable,
                     count))


def _group_counts(mask: Mask, fraction: float, spec: PrunableSpec, layerwise: bool,
                  count: str) -> list[tuple[list[int], jax.Array, jax.Array]]:
    """Per group of leaves pruned together: its leaf indices, how many of its weights to remove
    and how many of them are prunable now (int32 scalars; jax arrays, so usable under jit)."""
    frac = _check_fraction(fraction)
    _check_count(count)
    groups = _groups(mask, spec, layerwise)
    leaves = [jnp.asarray(m) for m in jax.tree_util.tree_leaves(mask)]
    kernels = [i for i, x in enumerate(leaves) if x.ndim >= spec.min_ndim]
    out = []
    for g in groups:
        prunable = sum(jnp.sum(leaves[i], dtype=jnp.int32) for i in g)
        # OpenLTH counts over every kernel still in the mask, excluded ones included.
        base = prunable if count == "exact" or layerwise else sum(
            jnp.sum(leaves[i], dtype=jnp.int32) for i in kernels)
        out.append((g, _step(frac, base, count), prunable))
    return out


def num_to_prune(mask: Mask, fraction: float, spec: PrunableSpec = DEFAULT_SPEC,
                 count: Count = "exact", layerwise: bool = False) -> tuple[jax.Array, jax.Array]:
    """How many weights one pruning step removes from ``mask``, and how many are prunable now.

    ``count="exact"`` removes ``ceil(fraction * prunable remaining)``. ``count="openlth"``
    follows the reference code (OpenLTH's ``sparse_global``): ``ceil(fraction * R) + 1``, with
    ``R`` every kernel weight (``ndim >= spec.min_ndim``) still in the mask, excluded leaves
    included, so that a level goes from ``R`` to ``R - ceil(fraction * R) - 1`` kernel weights;
    it needs at least that many prunable weights. With ``layerwise=True`` each prunable leaf
    is counted on its own (``R`` its remaining weights) and the totals are returned.

    Returns:
      ``(n, prunable)``, int32 scalars; works under jit.
    """
    counts = _group_counts(unpack(mask), fraction, spec, layerwise, count)
    return sum(n for _, n, _ in counts), sum(p for _, _, p in counts)


def _check_enough(mask: Mask, fraction: float, spec: PrunableSpec, layerwise: bool,
                  count: str) -> None:
    """ValueError when a step would remove more weights than are prunable; only on concrete
    masks (under a trace the caller checks with :func:`num_to_prune`)."""
    leaves = jax.tree_util.tree_leaves(mask)
    if count == "exact" or any(isinstance(m, jax.core.Tracer) for m in leaves):
        return  # an exact count never exceeds what remains
    for g, n, prunable in _group_counts(mask, fraction, spec, layerwise, count):
        if int(n) > int(prunable):
            where = f"leaf {leaf_paths(mask)[g[0]]!r}" if layerwise else "the prunable leaves"
            raise ValueError(
                f"cannot prune {int(n)} weights (count={count!r}, fraction={fraction}): only "
                f"{int(prunable)} remain in {where}")


def _prune(keys_tree: PyTree, mask: Mask, fraction: float, spec: PrunableSpec,
           layerwise: bool, count: str) -> Mask:
    check_mask(keys_tree, mask)
    key_leaves = jax.tree_util.tree_leaves(keys_tree)
    mask_leaves = [jnp.asarray(m) for m in jax.tree_util.tree_leaves(mask)]
    for g, n, _ in _group_counts(mask, fraction, spec, layerwise, count):
        pruned = _prune_smallest([key_leaves[i] for i in g], [mask_leaves[i] for i in g], n)
        for i, m in zip(g, pruned, strict=True):
            mask_leaves[i] = m
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(mask), mask_leaves)


@functools.partial(jax.jit, static_argnames=("fraction", "spec", "layerwise", "count", "random"))
def _pruned(source: PyTree, mask: Mask, fraction: float, spec: PrunableSpec, layerwise: bool,
            count: str, random: bool) -> Mask:
    keys = _random_keys(source, mask) if random else _magnitude_keys(source)
    return _prune(keys, mask, fraction, spec, layerwise, count)


def _prune_checked(source: PyTree, mask: Mask, fraction: float, spec: PrunableSpec,
                   layerwise: bool, count: str, random: bool) -> Mask:
    mask = unpack(mask)
    _check_count(count)
    _check_fraction(fraction)
    if not random:
        check_mask(source, mask)
        source = _arrays_only(source)  # functions and other non-arrays cannot enter jit
    _check_enough(mask, fraction, spec, layerwise, count)
    return _pruned(source, mask, fraction, spec, layerwise, count, random)


def prune_global(params: PyTree, mask: Mask, fraction: float,
                 spec: PrunableSpec = DEFAULT_SPEC, count: Count = "exact") -> Mask:
    """Global magnitude pruning: removes ``ceil(fraction * remaining)`` prunable weights.

    The kept prunable weights with the smallest ``|w|``, ranked across all prunable leaves together
    on raw magnitudes (no per-layer normalisation), are removed; pruned weights stay pruned. The
    count is exact even with ties. Jittable (``fraction``, ``spec`` and ``count`` static) and
    vmappable.

    Args:
      params: the trained params.
      mask: the current mask (same structure and shapes as ``params``).
      fraction: fraction in [0, 1) of the *remaining* prunable weights to remove; read as the
        nearest rational with denominator <= 10 000 so the count is exact.
      spec: which leaves are prunable.
      count: ``"exact"`` (the fraction of the prunable weights, as above) or ``"openlth"`` (the
        reference code's count, see :func:`num_to_prune`).

    Returns:
      The new mask.

    Raises:
      ValueError: on a concrete mask, when ``count="openlth"`` asks for more weights than are
        prunable; under a trace that case removes every prunable weight, so check first with
        :func:`num_to_prune`.
    """
    return _prune_checked(params, mask, fraction, spec, False, count, False)


def prune_layerwise(params: PyTree, mask: Mask, fraction: float,
                    spec: PrunableSpec = DEFAULT_SPEC, count: Count = "exact") -> Mask:
    """Layerwise magnitude pruning: ``ceil(fraction * remaining)`` removed in each prunable leaf
    (plus one with ``count="openlth"``)."""
    return _prune_checked(params, mask, fraction, spec, True, count, False)


def _random_keys(key: jax.Array, mask: Mask) -> PyTree:
    leaves, treedef = jax.tree_util.tree_flatten(mask)
    keys = jax.random.split(key, len(leaves))
    # 31 random bits as non-negative int32 keys: ties are rare, and broken by position anyway.
    scores = [(jax.random.bits(k, jnp.shape(m), jnp.uint32) >> 1).astype(jnp.int32)
              for k, m in zip(keys, leaves, strict=True)]
    return jax.tree_util.tree_unflatten(treedef, scores)


def prune_random_global(key: jax.Array, mask: Mask, fraction: float,
                        spec: PrunableSpec = DEFAULT_SPEC, count: Count = "exact") -> Mask:
    """Random pruning control: removes as many kept weights as :func:`prune_global` would, chosen
    uniformly at random over all prunable leaves together."""
    return _prune_checked(key, mask, fraction, spec, False, count, True)


def prune_random_layerwise(key: jax.Array, mask: Mask, fraction: float,
                           spec: PrunableSpec = DEFAULT_SPEC, count: Count = "exact") -> Mask:
    """Random pruning control with as many weights removed in every prunable leaf as
    :func:`prune_layerwise` would."""
    return _prune_checked(key, mask, fraction, spec, True, count, True)


# ---------------------------------------------------------------------------------------------
# Pruning to a target sparsity.


def _check_sparsity(sparsity: Any, what: str = "sparsity") -> fractions.Fraction:
    if (isinstance(sparsity, bool) or not isinstance(sparsity, (int, float))
            or not 0.0 <= sparsity < 1.0):
        raise ValueError(f"{what} must be a number in [0, 1), got {sparsity!r}")
    return fractions.Fraction(sparsity).limit_denominator(_MAX_DENOMINATOR)


def _ceil(frac: fractions.Fraction, n: int) -> int:
    return -(-frac.numerator * n // frac.denominator)


def _erk_kept(shapes: Sequence[tuple[int, ...]], keep: int, power_scale: float) -> list[int]:
    """How many weights each leaf keeps under Erdos-Renyi-Kernel, ``keep`` in all.

    A leaf of shape ``(d_1, ..., d_k)`` keeps a fraction ``eps * (sum(d) / prod(d)) **
    power_scale`` of its weights (RigL, Evci et al. 2020); leaves whose fraction would exceed 1
    are kept dense and ``eps`` is solved again over the others. The fractional parts go to the
    leaves with the largest remainders, so the counts add up to ``keep`` exactly.
    """
    sizes = [math.prod(s) for s in shapes]
    raw = [(sum(s) / n) ** power_scale if n else 0.0 for s, n in zip(shapes, sizes, strict=True)]
    dense: set[int] = set()
    while True:
        rest = [i for i in range(len(sizes)) if i not in dense and sizes[i]]
        budget = keep - sum(sizes[i] for i in dense)
        divisor = sum(raw[i] * sizes[i] for i in rest)
        eps = budget / divisor if divisor else 0.0
        # A small tolerance: the last free leaf's exact fraction is <= 1, whatever the rounding.
        over = [i for i in rest if eps * raw[i] > 1.0 + 1e-12]
        if not over:
            break
        top = max(raw[i] for i in over)
        dense.update(i for i in rest if raw[i] == top)
    share = [float(sizes[i]) if i in dense else eps * raw[i] * sizes[i]
             for i in range(len(sizes))]
    kept = [min(n, math.floor(x)) for n, x in zip(sizes, share, strict=True)]
    by_remainder = sorted(range(len(sizes)), key=lambda i: (kept[i] - share[i], i))
    while sum(kept) != keep:
        step = 1 if sum(kept) < keep else -1
        for i in by_remainder if step > 0 else reversed(by_remainder):
            if sum(kept) != keep and 0 <= kept[i] + step <= sizes[i]:
                kept[i] += step
    return kept


def _prunable_shapes(tree: PyTree, spec: PrunableSpec) -> tuple[list[int], list[str],
                                                                list[tuple[int, ...]]]:
    """Indices (in the mask's ``tree_leaves`` order), paths and shapes of the prunable leaves."""
    mask_like = _arrays_only(tree)
    flags = spec.flags(mask_like)
    if not any(flags):
        raise ValueError(
            f"nothing to prune: no leaf has ndim >= {spec.min_ndim} outside the exclusions "
            f"{spec.exclude}; leaves are {leaf_paths(mask_like)}")
    leaves, paths = jax.tree_util.tree_leaves(mask_like), leaf_paths(mask_like)
    idx = [i for i, f in enumerate(flags) if f]
    return idx, [paths[i] for i in idx], [tuple(jnp.shape(leaves[i])) for i in idx]


def _targets(tree: PyTree, sparsity: float | Mapping[str, float], spec: PrunableSpec,
             distribution: str, erk_power_scale: float) -> tuple[tuple[tuple[int, ...], int], ...]:
    """The pruning plan: groups of leaf indices and how many weights each group has pruned at
    the target (Python ints, from shapes only)."""
    idx, paths, shapes = _prunable_shapes(tree, spec)
    sizes = [math.prod(s) for s in shapes]
    if isinstance(sparsity, Mapping):
        if distribution != "global":
            raise ValueError("a mapping of per-leaf sparsities is a distribution of its own: "
                             f"leave distribution out, got {distribution!r}")
        unknown = sorted(set(sparsity) - set(paths))
        if unknown:
            raise ValueError(f"sparsity names leaves that are not prunable: {unknown}; the "
                             f"prunable leaves are {paths}")
        return tuple(((i,), _ceil(_check_sparsity(sparsity[p], f"sparsity[{p!r}]"), n))
                     for i, p, n in zip(idx, paths, sizes, strict=True) if p in sparsity)
    frac = _check_sparsity(sparsity)
    if distribution == "global":
        return ((tuple(idx), _ceil(frac, sum(sizes))),)
    if distribution == "uniform":
        return tuple(((i,), _ceil(frac, n)) for i, n in zip(idx, sizes, strict=True))
    if distribution == "erk":
        if not erk_power_scale >= 0:
            raise ValueError(f"erk_power_scale must be >= 0, got {erk_power_scale!r}")
        kept = _erk_kept(shapes, sum(sizes) - _ceil(frac, sum(sizes)), erk_power_scale)
        return tuple(((i,), n - k) for i, n, k in zip(idx, sizes, kept, strict=True))
    raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")


def layer_sparsities(tree: PyTree, sparsity: float, distribution: Distribution = "erk",
                     spec: PrunableSpec = DEFAULT_SPEC, *,
                     erk_power_scale: float = 1.0) -> dict[str, float]:
    """The sparsity :func:`prune_to` gives each prunable leaf for a per-leaf distribution.

    ``"uniform"``: every prunable leaf at ``sparsity``. ``"erk"`` (Erdos-Renyi-Kernel, as in RigL
    and jaxpruner): a leaf of shape ``(d_1, ..., d_k)`` keeps a fraction proportional to
    ``(sum(d) / prod(d)) ** erk_power_scale``, so small layers stay denser; layers that would be
    denser than dense are kept whole; the leaves' counts add up to the global target
    ``ceil(sparsity * prunable weights)`` exactly. (``"global"`` has no per-leaf targets: the
    magnitudes decide.)

    Args:
      tree: params or a mask; only the shapes are read.
      sparsity: the target fraction in [0, 1) of all prunable weights pruned.
      distribution: ``"uniform"`` or ``"erk"``.
      spec: which leaves are prunable.
      erk_power_scale: the exponent of the ERK ratio; below 1 makes ERK closer to uniform.

    Returns:
      ``{path: pruned weights / weights}`` for every prunable leaf.
    """
    if distribution == "global":
        raise ValueError("the global distribution has no per-leaf sparsities: magnitudes ranked "
                         "across the leaves decide; use 'uniform' or 'erk'")
    tree = unpack(tree)
    _, paths, shapes = _prunable_shapes(tree, spec)
    plan = _targets(tree, sparsity, spec, distribution, erk_power_scale)
    return {p: n / math.prod(s) if math.prod(s) else 0.0
            for p, s, (_, n) in zip(paths, shapes, plan, strict=True)}


@functools.partial(jax.jit, static_argnames=("plan",))
def _pruned_to(params: PyTree, mask: Mask, plan: tuple[tuple[tuple[int, ...], int], ...]) -> Mask:
    keys = jax.tree_util.tree_leaves(_magnitude_keys(params))
    leaves = [jnp.asarray(m) for m in jax.tree_util.tree_leaves(mask)]
    for group, target in plan:
        size = sum(leaves[i].size for i in group)
        kept = sum(jnp.sum(leaves[i], dtype=jnp.int32) for i in group)
        # A group already sparser than its target is left as it is: masks only shrink.
        n = jnp.maximum(target - (size - kept), 0)
        for i, m in zip(group, _prune_smallest([keys[i] for i in group],
                                               [leaves[i] for i in group], n), strict=True):
            leaves[i] = m
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(mask), leaves)


def prune_to(params: PyTree, mask: Mask, sparsity: float | Mapping[str, float],
             spec: PrunableSpec = DEFAULT_SPEC, distribution: Distribution = "global", *,
             erk_power_scale: float = 1.0) -> Mask:
    """Magnitude pruning to a target sparsity of the prunable weights (not a step of a fraction
    of what remains, as :func:`prune_global`).

    The kept prunable weights with the smallest ``|w|`` are removed until ``sparsity`` is
    reached, counted as :func:`prune_global` counts (``ceil(sparsity * weights)`` pruned, the
    sparsity read as the nearest rational with denominator <= 10 000, exact with ties); pruned
    weights stay pruned. From an all-true mask, ``prune_to(params, mask, s)`` equals
    ``prune_global(params, mask, s)``.

    Args:
      params: the trained params; non-array leaves are passed through.
      mask: the current mask (see :func:`check_mask`).
      sparsity: the target fraction in [0, 1) of pruned weights; or a mapping from leaf paths
        (see :func:`leaf_paths`; prunable leaves only) to each leaf's own target, the leaves not
        named being left as they are.
      spec: which leaves are prunable.
      distribution: how a single target is spread over the leaves: ``"global"`` ranks all
        prunable weights together on raw magnitudes (no per-layer normalisation); ``"uniform"``
        prunes every leaf to ``sparsity``; ``"erk"`` gives each leaf the Erdos-Renyi-Kernel share
        (see :func:`layer_sparsities`) and ranks within each leaf.
      erk_power_scale: the exponent of the ERK ratio.

    Returns:
      The new mask. Jittable with ``sparsity``, ``spec`` and ``distribution`` static (a mapping
      is not hashable: close over it, ``jax.jit(lambda p, m: prune_to(p, m, targets))``).

    Raises:
      ValueError: on a concrete mask already sparser than the target (in a leaf, for the
        per-leaf distributions); under a trace such a leaf is left as it is.
    """
    mask = unpack(mask)
    check_mask(params, mask)
    plan = _targets(mask, sparsity, spec, distribution, erk_power_scale)
    leaves = jax.tree_util.tree_leaves(mask)
    if not _traced(leaves):
        paths = leaf_paths(mask)
        for group, target in plan:
            pruned = sum(int(np.size(leaves[i])) - int(np.count_nonzero(np.asarray(leaves[i])))
                         for i in group)
            if pruned > target:
                where = f"leaf {paths[group[0]]!r}" if len(group) == 1 else "the prunable leaves"
                raise ValueError(f"the mask already has {pruned} weights pruned in {where}, more "
                                 f"than the target's {target}: masks only shrink")
    return _pruned_to(_arrays_only(params), mask, plan)


# ---------------------------------------------------------------------------------------------
# Training with masks.


def masked_optimizer(inner: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
    """Wraps an optax optimizer so that pruned weights get exactly zero updates.

    Gradients of pruned weights are zeroed *before* ``inner`` sees them (so momentum or Adam
    statistics never accumulate for them) and the updates are zeroed after (so weight decay or any
    other term cannot move them). ``update`` requires the current mask as ``masks=``; omitting it
    is an error rather than a silently dense step. Combined with params that are already masked,
    ``optax.apply_updates`` then keeps every pruned weight at exactly 0.

    Example::

        opt = masked_optimizer(optax.sgd(0.1, momentum=0.9))
        state = opt.init(params)
        updates, state = opt.update(grads, state, params, masks=mask)
        params = optax.apply_updates(params, updates)
    """
    inner = optax.with_extra_args_support(inner)

    def update(updates, state, params=None, *, masks=None, **extra):
        if masks is None:
            raise ValueError("masked_optimizer.update needs the current mask: pass masks=mask")
        masks = unpack(masks)
        updates = apply_mask(updates, masks)
        updates, state = inner.update(updates, state, params, **extra)
        return apply_mask(updates, masks), state

    return optax.GradientTransformationExtraArgs(inner.init, update)


class MaskedOptState(NamedTuple):
    """The state of :func:`wrap_optax`: the inner optimizer's state and the current mask."""

    inner_state: optax.OptState
    mask: Mask


def _check_like(params: PyTree, mask: Mask) -> None:
    """:func:`check_mask`, or, where ``params`` wraps its arrays in pytree nodes of its own
    (``flax.nnx.Variable``), the same array leaves in the same order with the same shapes."""
    try:
        check_mask(params, mask)
        return
    except ValueError as error:
        strict = error
    arrays = [x for x in jax.tree_util.tree_leaves(params) if _is_array(x)]
    leaves = jax.tree_util.tree_leaves(mask)
    if len(arrays) != len(leaves) or any(
            not _is_array(m) or jnp.shape(m) != jnp.shape(p) or jnp.result_type(m) != jnp.bool_
            for p, m in zip(arrays, leaves, strict=True)):
        raise strict


def wrap_optax(inner: optax.GradientTransformation, mask: Mask | None = None, *,
               packed: bool = False) -> optax.GradientTransformationExtraArgs:
    """An optax optimizer that trains only the weights ``mask`` keeps; the mask lives in its state.

    A drop-in for any loop that takes an optax optimizer (``flax.training.train_state.TrainState``,
    ``flax.nnx.Optimizer``, an Equinox or plain JAX loop): ``update`` needs no extra argument.
    Gradients of pruned weights are zeroed before ``inner`` sees them (momentum or Adam statistics
    never accumulate for them) and their updates are replaced by ``-params``, so that
    ``optax.apply_updates`` lands every pruned weight on exactly 0, whatever ``inner`` does
    (weight decay included), even a weight pruned since the last step. Called without ``params``,
    the updates of pruned weights are zero instead: they stay where they are (0 if the params were
    masked with :func:`apply_mask`).

    After pruning, put the new mask in with :func:`set_mask`: the inner state (momentum, Adam
    moments, step counts) is kept; :func:`get_mask` reads it back. With params that are already
    masked, it does the arithmetic of :func:`masked_optimizer` given the same mask (equal bit for
    bit when run op by op).

    Args:
      inner: any optax optimizer (``GradientTransformationExtraArgs`` extra arguments are passed
        on).
      mask: the mask to train with, as :func:`ones_like` makes it for the params (a mask built
        from ``nnx.state(model, nnx.Param)`` fits ``nnx.Optimizer``); ``None``: all-true, built by
        ``init``. Packed (:func:`pack`) or not, either way.
      packed: keep the mask in the state bit-packed (:func:`pack`), 8 times smaller than bool
        arrays, unpacked at each ``update`` (inside a jitted step, it is a transient of that
        step). The updates are the same, bit for bit.

    Returns:
      The wrapped optimizer; its state is a :class:`MaskedOptState`.

    Example::

        tx = masks.wrap_optax(optax.adamw(1e-3), mask)
        state = TrainState.create(apply_fn=model.apply, params=masks.apply_mask(params, mask),
                                  tx=tx)
        ...                                         # state.apply_gradients(grads=grads)
        mask = masks.prune_global(state.params, mask, 0.2)
        state = state.replace(params=masks.apply_mask(state.params, mask),
                              opt_state=masks.set_mask(state.opt_state, mask))
    """
    inner = optax.with_extra_args_support(inner)

    def init(params: PyTree) -> MaskedOptState:
        m = ones_like(params) if mask is None else unpack(mask)
        _check_like(params, m)
        m = jax.tree_util.tree_map(jnp.asarray, m)
        return MaskedOptState(inner.init(params), _pack_flat(m) if packed else m)

    def update(updates: PyTree, state: MaskedOptState, params: PyTree | None = None,
               **extra: Any) -> tuple[PyTree, MaskedOptState]:
        m = unpack(state.mask)
        if isinstance(state.mask, _PackedTree):
            # The stored tree may wrap its arrays (nnx variables) where ``updates`` does not.
            _check_like(updates, m)
            m = jax.tree_util.tree_unflatten(
                jax.tree_util.tree_structure(_arrays_only(updates)), jax.tree_util.tree_leaves(m))
        updates, inner_state = inner.update(apply_mask(updates, m), state.inner_state, params,
                                            **extra)
        if params is None:
            updates = apply_mask(updates, m)
        else:
            check_mask(updates, m)
            updates = jax.tree_util.tree_map(
                lambda u, k, p: u if k is None else jnp.where(k, u, -p.astype(u.dtype)),
                updates, m, _arrays_only(params))
        return updates, MaskedOptState(inner_state, state.mask)

    return optax.GradientTransformationExtraArgs(init, update)


def _is_masked_state(x: Any) -> bool:
    return isinstance(x, MaskedOptState)


def _masked_states(opt_state: PyTree) -> list[MaskedOptState]:
    found = []
    jax.tree_util.tree_map(lambda x: found.append(x) if _is_masked_state(x) else None,
                           opt_state, is_leaf=_is_masked_state)
    if not found:
        raise ValueError("opt_state holds no masks.wrap_optax state: pass the state of an "
                         "optimizer built with masks.wrap_optax")
    return found


def get_mask(opt_state: PyTree) -> Mask:
    """The mask in the state of a :func:`wrap_optax` optimizer (found anywhere inside
    ``opt_state``, e.g. under ``optax.chain``), as bool arrays whether it is stored packed or not.
    Unpacked, it comes in the tree it is stored in, so under ``nnx.Optimizer`` its arrays sit in
    ``nnx`` variables (``nnx.as_pure`` unwraps them); packed, in the tree it was given in."""
    states = _masked_states(opt_state)
    if len(states) > 1:
        raise ValueError(f"opt_state holds {len(states)} masks.wrap_optax states; take the one "
                         "you mean from it")
    return unpack(states[0].mask)


def set_mask(opt_state: PyTree, mask: Mask) -> PyTree:
    """``opt_state`` with ``mask`` in place of the :func:`wrap_optax` optimizer's mask.

    Everything else is kept: momentum, Adam moments and step counts carry on. The next update
    sets the newly pruned weights to zero (given ``params``); apply the mask to the params as
    well (:func:`apply_mask`) so the forward pass sees them pruned at once. Works inside jit;
    with ``nnx.Optimizer``, ``optimizer.opt_state = masks.set_mask(optimizer.opt_state, mask)``.
    ``mask`` may be packed or not; it is stored as the state stores its mask (packed with
    ``wrap_optax(..., packed=True)``).

    Raises:
      ValueError: if ``opt_state`` holds no :func:`wrap_optax` state, or ``mask`` does not fit
        the mask it holds (structure, shapes, bool).
    """
    _masked_states(opt_state)

    def swap(state: Any) -> Any:
        if not _is_masked_state(state):
            return state
        new = unpack(mask)
        _check_like(unpack(state.mask), new)
        if isinstance(state.mask, _PackedTree):
            new = _pack_flat(new)
        # The old mask's tree, so wrappers (nnx variables) and their metadata are kept.
        old = jax.tree_util.tree_structure(state.mask)
        new = [jnp.asarray(x) for x in jax.tree_util.tree_leaves(new)]
        return state._replace(mask=jax.tree_util.tree_unflatten(old, new))

    return jax.tree_util.tree_map(swap, opt_state, is_leaf=_is_masked_state)

