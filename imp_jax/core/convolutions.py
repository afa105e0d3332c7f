"""Convolutions in XLA:CPU's native form, wherever they sit in a program.

XLA:CPU runs a convolution fast (Eigen's kernels) only when its operands are laid out NHWC and
HWIO and its output NHWC, and a compiler pass, ``ConvCanonicalization``, transposes the others
into that form; but the pass visits the program's entry computation only. The backward
convolutions JAX's autodiff emits (input gradients with the kernel's I and O swapped, weight
gradients with batch and feature roles exchanged) are not in that form, so inside a
``lax.fori_loop``, ``scan`` or ``lax.map`` body XLA compiles them to a plain loop nest, 10-30x
slower. Likewise ``jax.vmap`` of a convolution over weights (one kernel per replicate) becomes a
grouped convolution, which XLA:CPU runs several times slower per group than the separate ones.

:func:`native_convolutions` rewrites a function so that every convolution in it is the native
form between explicit transposes (what the pass would have done), and so that ``jax.vmap`` of the
rewritten function computes one convolution per index of the mapped axis. Everything else is left
as JAX traced it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend import core as jex


def _native_dimension_numbers(ndim: int) -> lax.ConvDimensionNumbers:
    """N, spatial..., C input and output; spatial..., I, O kernel."""
    spatial = tuple(range(1, ndim - 1))
    return lax.ConvDimensionNumbers((0, ndim - 1, *spatial), (ndim - 1, ndim - 2,
                                                             *range(ndim - 2)),
                                    (0, ndim - 1, *spatial))


def _per_index(conv: Callable[[jax.Array, jax.Array], jax.Array]) -> Callable:
    """``conv`` whose ``jax.vmap`` runs one convolution per index rather than a grouped one."""
    one = jax.custom_batching.custom_vmap(conv)

    @one.def_vmap
    def _(axis_size, in_batched, lhs, rhs):
        lhs_batched, rhs_batched = in_batched
        outs = [one(lhs[i] if lhs_batched else lhs, rhs[i] if rhs_batched else rhs)
                for i in range(axis_size)]
        return jnp.stack(outs), True

    return one


def _native_conv(lhs: jax.Array, rhs: jax.Array, *, dimension_numbers: lax.ConvDimensionNumbers,
                 **params: Any) -> jax.Array:
    """The convolution ``conv_general_dilated_p`` with ``params``, computed in native form."""
    lhs_spec, rhs_spec, out_spec = dimension_numbers
    native = _native_dimension_numbers(lhs.ndim)

    def conv(lhs: jax.Array, rhs: jax.Array) -> jax.Array:
        return lax.conv_general_dilated_p.bind(lhs, rhs, dimension_numbers=native, **params)

    out = _per_index(conv)(jnp.transpose(lhs, (lhs_spec[0], *lhs_spec[2:], lhs_spec[1])),
                           jnp.transpose(rhs, (*rhs_spec[2:], rhs_spec[1], rhs_spec[0])))
    return jnp.transpose(out, np.argsort((out_spec[0], *out_spec[2:], out_spec[1])))


def _evaluate(jaxpr: jex.Jaxpr, consts: list[Any], *args: Any) -> list[Any]:
    """``jaxpr`` applied to ``args``, its convolutions (also in nested jits) in native form."""
    env: dict[jex.Var, Any] = dict(zip(jaxpr.constvars, consts, strict=True))
    env.update(zip(jaxpr.invars, args, strict=True))

    def read(v: Any) -> Any:
        return v.val if isinstance(v, jex.Literal) else env[v]

    for eqn in jaxpr.eqns:
        inputs = [read(v) for v in eqn.invars]
        if eqn.primitive is lax.conv_general_dilated_p:
            outputs = [_native_conv(*inputs, **eqn.params)]
        elif eqn.primitive.name == "jit":
            inner = eqn.params["jaxpr"]
            outputs = _evaluate(inner.jaxpr, inner.consts, *inputs)
        else:
            with eqn.ctx.manager:
                outputs = eqn.primitive.bind(*inputs,
                                             **eqn.primitive.get_bind_params(eqn.params))
            if not eqn.primitive.multiple_results:
                outputs = [outputs]
        env.update(zip(eqn.outvars, outputs, strict=True))
    return [read(v) for v in jaxpr.outvars]


def native_convolutions(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` (positional pytree arguments, any pytree result) with every convolution computed
    in XLA:CPU's native form, and one convolution per index under ``jax.vmap``.

    The results are ``fn``'s to float rounding. Convolutions in ``fn``'s own control flow
    (``scan``, ``while_loop``, ``cond``) are left alone: rewrite the loop's body instead. Meant
    for CPUs: other backends choose their own layouts and run grouped convolutions well.
    """

    def rewritten(*args: Any) -> Any:
        closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*args)
        outputs = _evaluate(closed.jaxpr, closed.consts, *jax.tree_util.tree_leaves(args))
        return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(out_shape), outputs)

    return rewritten
