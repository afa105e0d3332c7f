"""Pruning masks as pytrees.

A *mask* is a pytree with the structure and shapes of the params and boolean leaves: ``True`` keeps
a weight, ``False`` prunes it. Leaves that may not be pruned (biases, normalisation parameters,
excluded layers) stay all-true. Which leaves are prunable is described by a hashable
:class:`PrunableSpec`, so it can be a static argument of ``jax.jit``.

Everything here is a pure function over pytrees and works on any params tree (Flax, Equinox,
nested dicts): this module imports only jax, numpy and optax.

Typical use::

    spec = masks.PrunableSpec(exclude=(r"Dense_2/",))     # keep the output layer dense
    mask = masks.ones_like(params)
    opt = masks.masked_optimizer(optax.sgd(0.1, momentum=0.9))
    ...                                                     # train with opt.update(..., masks=mask)
    mask = masks.prune_global(params, mask, 0.2, spec)     # remove 20% of what remains
    params = masks.apply_mask(params, mask)
"""

from __future__ import annotations

import dataclasses
import fractions
import functools
import re
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

PyTree = Any
Mask = PyTree

# Denominator bound when reading a pruning fraction as a rational p/q: the pruned count
# ceil(p * n / q) is then computed exactly in int32 inside jit, for any n < 2**31.
_MAX_DENOMINATOR = 10_000
# How many weights a pruning step removes: see num_to_prune.
COUNTS = ("exact", "openlth")
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


def ones_like(params: PyTree) -> Mask:
    """An all-true mask for ``params`` (nothing pruned)."""
    return jax.tree_util.tree_map(lambda x: jnp.ones(jnp.shape(x), dtype=bool), params)


def check_mask(params: PyTree, mask: Mask) -> None:
    """Raises ValueError unless ``mask`` has ``params``'s tree structure, shapes and bool leaves."""
    p_def, m_def = jax.tree_util.tree_structure(params), jax.tree_util.tree_structure(mask)
    if p_def != m_def:
        raise ValueError(
            f"mask tree structure does not match the params: expected {p_def}, got {m_def}")
    for path, p, m in zip(leaf_paths(params), jax.tree_util.tree_leaves(params),
                          jax.tree_util.tree_leaves(mask), strict=True):
        if jnp.shape(p) != jnp.shape(m):
            raise ValueError(
                f"mask leaf {path!r} has shape {jnp.shape(m)}, expected the param's "
                f"shape {jnp.shape(p)}")
        if jnp.result_type(m) != jnp.bool_:
            raise ValueError(f"mask leaf {path!r} has dtype {jnp.result_type(m)}, expected bool")


def apply_mask(params: PyTree, mask: Mask) -> PyTree:
    """Returns ``params`` with pruned entries set to exactly zero (dtypes preserved)."""
    check_mask(params, mask)
    return jax.tree_util.tree_map(lambda p, m: jnp.where(m, p, jnp.zeros_like(p)), params, mask)


# ---------------------------------------------------------------------------------------------
# Counting.


def _prunable_leaves(mask: Mask, spec: PrunableSpec) -> tuple[list[str], list[jax.Array]]:
    flags = spec.flags(mask)
    pairs = [(p, m) for p, m, f in zip(leaf_paths(mask), jax.tree_util.tree_leaves(mask), flags,
                                       strict=True) if f]
    if not pairs:
        raise ValueError(
            f"nothing is prunable: no leaf has ndim >= {spec.min_ndim} outside the exclusions "
            f"{spec.exclude}; leaves are {leaf_paths(mask)}")
    return [p for p, _ in pairs], [m for _, m in pairs]


def count(mask: Mask, spec: PrunableSpec = DEFAULT_SPEC) -> dict[str, Any]:
    """Counts remaining and total prunable weights, overall and per prunable leaf.

    Returns:
      ``{"remaining": int32, "total": int, "sparsity": float32, "per_leaf": {path: (remaining,
      total)}}``; ``remaining`` values are jax scalars (so this works under jit), totals are
      Python ints (they depend on shapes only).
    """
    paths, leaves = _prunable_leaves(mask, spec)
    per_leaf = {p: (jnp.sum(m, dtype=jnp.int32), int(np.size(m))) for p, m in zip(paths, leaves,
                                                                                  strict=True)}
    remaining = sum(r for r, _ in per_leaf.values())
    total = sum(t for _, t in per_leaf.values())
    return {"remaining": remaining, "total": total,
            "sparsity": 1.0 - remaining.astype(jnp.float32) / total, "per_leaf": per_leaf}


def overlap(a: Mask, b: Mask, spec: PrunableSpec = DEFAULT_SPEC) -> jax.Array:
    """Fraction of kept prunable weights the two masks share: ``|a & b| / |a | b|`` (Jaccard).

    1 for identical masks; for nested masks (a later IMP level inside an earlier one) it is the
    ratio of their sizes. Useful to compare tickets across levels or seeds.
    """
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


def step_size(fraction: float, remaining: int, prunable: int, count: str = "exact") -> int:
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
                 count: str = "exact", layerwise: bool = False) -> tuple[jax.Array, jax.Array]:
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
    counts = _group_counts(mask, fraction, spec, layerwise, count)
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
    _check_count(count)
    _check_fraction(fraction)
    _check_enough(mask, fraction, spec, layerwise, count)
    return _pruned(source, mask, fraction, spec, layerwise, count, random)


def prune_global(params: PyTree, mask: Mask, fraction: float,
                 spec: PrunableSpec = DEFAULT_SPEC, count: str = "exact") -> Mask:
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
                    spec: PrunableSpec = DEFAULT_SPEC, count: str = "exact") -> Mask:
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
                        spec: PrunableSpec = DEFAULT_SPEC, count: str = "exact") -> Mask:
    """Random pruning control: removes as many kept weights as :func:`prune_global` would, chosen
    uniformly at random over all prunable leaves together."""
    return _prune_checked(key, mask, fraction, spec, False, count, True)


def prune_random_layerwise(key: jax.Array, mask: Mask, fraction: float,
                           spec: PrunableSpec = DEFAULT_SPEC, count: str = "exact") -> Mask:
    """Random pruning control with as many weights removed in every prunable leaf as
    :func:`prune_layerwise` would."""
    return _prune_checked(key, mask, fraction, spec, True, count, True)


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
        updates = apply_mask(updates, masks)
        updates, state = inner.update(updates, state, params, **extra)
        return apply_mask(updates, masks), state

    return optax.GradientTransformationExtraArgs(inner.init, update)
