"""Benchmarks behind the figures quoted in the README and the issues.

    python -m experiments.benchmark                 # everything
    python -m experiments.benchmark --only=prune    # one section

Each section prints one line per figure, as ``name: value`` pairs; timings are the median of
several runs after a warm-up (compilation excluded), and ratios are taken within one run so that a
noisy machine affects both sides alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from imp_jax import masks

_ONLY = flags.DEFINE_list("only", [], "Sections to run (default: all).")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed runs per figure (median reported).")


def timeit(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn()`` (blocking on its result) after one warm-up call."""
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def bench_prune(repeats: int) -> None:
    """Jitted global magnitude pruning of a 10M-weight tree, against a full sort of its values."""
    rng = np.random.default_rng(0)
    shapes = [(3, 3, 64, 64)] * 6 + [(3, 3, 128, 128)] * 6 + [(3, 3, 256, 256)] * 15 + [(256, 10)]
    params = {f"layer{i}": {"kernel": jnp.asarray(rng.normal(size=s), jnp.float32),
                            "bias": jnp.zeros(s[-1])} for i, s in enumerate(shapes)}
    mask = masks.ones_like(params)
    n = masks.count(mask)["total"]
    prune = jax.jit(lambda p, m: masks.prune_global(p, m, 0.2))
    t_prune = timeit(lambda: prune(params, mask), repeats)
    flat = jnp.concatenate([jnp.abs(x["kernel"]).ravel() for x in params.values()])
    sort = jax.jit(jnp.sort)
    t_sort = timeit(lambda: sort(flat), max(1, repeats // 2))
    print(f"prune_global: weights={n} seconds={t_prune:.3f} full_sort_seconds={t_sort:.3f} "
          f"speedup_vs_sort={t_sort / t_prune:.1f}x")


SECTIONS: dict[str, Callable[[int], None]] = {"prune": bench_prune}


def main(argv: list[str]) -> None:
    del argv
    unknown = set(_ONLY.value) - set(SECTIONS)
    if unknown:
        raise app.UsageError(f"--only: unknown sections {sorted(unknown)}; "
                             f"choose from {sorted(SECTIONS)}")
    print(f"jax {jax.__version__} on {jax.devices()[0].platform} x{jax.device_count()}")
    for name, fn in SECTIONS.items():
        if not _ONLY.value or name in _ONLY.value:
            fn(_REPEATS.value)


if __name__ == "__main__":
    app.run(main)
