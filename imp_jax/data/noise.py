"""The label-noise model and the data key's random streams.

Randomness comes from one data key, split into independent streams with ``fold_in``: the noisy
labels depend on that key only, never on a model's seed.
"""

from __future__ import annotations

import jax
import numpy as np

# fold_in indices of the data key's independent random streams.
_STREAMS = {
    "split": 0,
    "train_noise": 1,
    "val_noise": 2,
    "test_noise": 3,
    "mixture_train": 4,
    "mixture_test": 5,
}


def stream(key: jax.Array, name: str) -> jax.Array:
    """The data key's independent stream ``name`` (a key of ``_STREAMS``)."""
    return jax.random.fold_in(key, _STREAMS[name])


def host_rng(key: jax.Array) -> np.random.Generator:
    """A numpy generator seeded by ``key``."""
    # Index bookkeeping happens on the host, on numpy arrays: a numpy generator seeded by the
    # key avoids an XLA compilation for every new array shape (slower than the work itself).
    return np.random.default_rng(np.asarray(jax.random.key_data(key)))


def add_label_noise(
    key: jax.Array, labels: np.ndarray, fraction: float, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Replaces the labels of ``round(fraction * n)`` random examples by uniform random labels.

    The examples are chosen without replacement, and each new label is drawn uniformly over all
    ``num_classes`` classes, so about 1/num_classes of the chosen keep their label (the study's
    semantics). Returns ``(noisy_labels, changed)`` with ``changed = noisy_labels != labels``.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {labels.shape}")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"label noise fraction must be in [0, 1], got {fraction}")
    if labels.size and not 0 <= labels.min() <= labels.max() < num_classes:
        raise ValueError(
            f"labels must lie in [0, num_classes={num_classes}), "
            f"got values in [{labels.min()}, {labels.max()}]"
        )
    count = round(fraction * len(labels))
    rng = host_rng(key)
    noisy = labels.copy()
    noisy[rng.permutation(len(labels))[:count]] = rng.integers(0, num_classes, count)
    return noisy, noisy != labels
