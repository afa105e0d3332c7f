"""Binary Gaussian-mixture tasks and their exact conditional label distribution.

Two tasks in ``dim`` dimensions, every component with identity covariance and balanced classes:

* ``"linear"``: class 0 ~ N(0, I), class 1 ~ N(nu * 1, I);
* ``"xor"``: class 0 is an equal mixture of N(0, I) and N(nu * 1, I), class 1 an equal mixture of
  N([nu * 1, 0], I) and N([0, nu * 1], I) (the two halves of the all-nu mean vector).

Because the generative model is known, p(y | x) is known exactly (:func:`true_probs`), which is
what lets the study measure how far a network's predicted probabilities are from the truth.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

TASKS = ("linear", "xor")
NUM_CLASSES = 2


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")


def _check_dim(task: str, dim: int) -> None:
    if dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim}")
    if task == "xor" and dim % 2:
        raise ValueError(f"dim must be even for the xor task (its means split in two), got {dim}")


def _check_nu(nu: float | jax.Array) -> None:
    # Traced values (nu passed as a jit argument) cannot be checked eagerly.
    if not isinstance(nu, jax.core.Tracer) and not float(nu) >= 0.0:
        raise ValueError(f"nu (the distance scale of the means) must be >= 0, got {nu}")


def _check_label_noise(label_noise: float | jax.Array) -> None:
    if not isinstance(label_noise, jax.core.Tracer) and not 0.0 <= float(label_noise) <= 1.0:
        raise ValueError(f"label_noise must be a fraction in [0, 1], got {label_noise}")


def _patterns(task: str, dim: int) -> np.ndarray:
    """0/1 indicators of the component means, shape (2 classes, components per class, dim)."""
    ones, zeros, half = np.ones(dim), np.zeros(dim), dim // 2
    if task == "linear":
        return np.stack([[zeros], [ones]]).astype(np.float32)
    first = np.concatenate([np.ones(half), np.zeros(half)])
    return np.stack([[zeros, ones], [first, 1.0 - first]]).astype(np.float32)


def centres(task: str, nu: float, dim: int = 100) -> np.ndarray:
    """The component means: ``centres(...)[c, k]`` is the mean of component ``k`` of class ``c``.

    Shape (2, 1, dim) for ``"linear"`` and (2, 2, dim) for ``"xor"``; float32.
    """
    _check_task(task)
    _check_dim(task, dim)
    _check_nu(nu)
    return np.float32(nu) * _patterns(task, dim)


def sample(
    key: jax.Array, task: str, nu: float, n: int, dim: int = 100
) -> tuple[np.ndarray, np.ndarray]:
    """Draws ``n`` points of a task: returns x float32 (n, dim) and clean labels y int32 (n,).

    Each label is 0 or 1 with probability 1/2; for ``"xor"`` the component within the class is
    also chosen uniformly. The key seeds a numpy generator: sampling on the host needs no XLA
    compilation per shape (which costs more than the sampling itself) and gives numpy arrays.
    """
    means = centres(task, nu, dim)
    if n < 1:
        raise ValueError(f"n must be a positive integer, got {n}")
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)))
    y = rng.integers(0, NUM_CLASSES, n, dtype=np.int32)
    component = rng.integers(0, means.shape[1], n)
    x = means[y, component] + rng.standard_normal((n, dim), dtype=np.float32)
    return x, y


def true_probs(
    task: str,
    nu: float | jax.Array,
    x: np.ndarray | jax.Array,
    label_noise: float | jax.Array = 0.0,
) -> jax.Array:
    """Exact p(y | x) for points ``x`` of shape (n, dim); returns (n, 2), rows summing to 1.

    With ``label_noise = eta`` it is the conditional of a label that was replaced by a uniformly
    random one with probability eta: ``(1 - eta) * p + eta / 2``. Usable under ``jax.jit`` (with
    ``task`` static; ``nu`` and ``label_noise`` may be traced) and on numpy input.
    """
    _check_task(task)
    x = jnp.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"x must have shape (n, dim), got {x.shape}")
    _check_dim(task, x.shape[1])
    _check_nu(nu)
    _check_label_noise(label_noise)
    means = nu * jnp.asarray(_patterns(task, x.shape[1]), x.dtype)  # (class, component, dim)
    # log N(x; m, I) = x.m - |m|^2 / 2 + (terms equal for every component, which cancel).
    log_density = jnp.einsum("nd,ckd->nck", x, means) - 0.5 * jnp.sum(means**2, axis=-1)
    # Components within a class are equally likely and classes balanced: p(y | x) is a softmax
    # over classes of the log-sum-exp over each class's components.
    probs = jax.nn.softmax(jax.nn.logsumexp(log_density, axis=-1), axis=-1)
    return (1.0 - label_noise) * probs + label_noise / NUM_CLASSES
