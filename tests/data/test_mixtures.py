"""Tests for imp_jax.data.mixtures: the samples and their exact p(y | x)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from imp_jax.data import mixtures

KEY = jax.random.key(0)


def _expected_centres(task: str, nu: float, dim: int) -> np.ndarray:
    zeros, ones = np.zeros(dim), np.ones(dim)
    if task == "linear":
        return nu * np.array([[zeros], [ones]])
    first = np.r_[np.ones(dim // 2), np.zeros(dim // 2)]
    return nu * np.array([[zeros, ones], [first, 1 - first]])


@pytest.mark.parametrize("task", mixtures.TASKS)
def test_centres_follow_the_definition(task):
    np.testing.assert_allclose(mixtures.centres(task, 0.7, 6), _expected_centres(task, 0.7, 6))


@pytest.mark.parametrize("task", mixtures.TASKS)
def test_sample_shapes_dtypes_and_reproducibility(task):
    x, y = mixtures.sample(KEY, task, 1.0, 50, dim=8)
    assert x.shape == (50, 8) and x.dtype == np.float32
    assert y.shape == (50,) and y.dtype == np.int32 and set(np.unique(y)) <= {0, 1}
    x2, y2 = mixtures.sample(KEY, task, 1.0, 50, dim=8)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    x3, _ = mixtures.sample(jax.random.key(1), task, 1.0, 50, dim=8)
    assert not np.array_equal(x, x3)


@pytest.mark.parametrize("task", mixtures.TASKS)
def test_sample_balanced_components_with_identity_covariance(task):
    # With nu = 3 in 100 dimensions the components are ~15 standard deviations apart, so each
    # point's component is recovered exactly from its nearest centre.
    n, dim, nu = 40_000, 100, 3.0
    x, y = mixtures.sample(KEY, task, nu, n, dim)
    means = mixtures.centres(task, nu, dim).reshape(-1, dim)  # rows: (class, component)
    nearest = np.argmin(((x[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    per_class = len(means) // 2
    np.testing.assert_array_equal(nearest // per_class, y)
    # Each (class, component) has probability 1 / len(means): counts within 5 binomial sds.
    share = 1 / len(means)
    counts = np.bincount(nearest, minlength=len(means))
    assert np.all(np.abs(counts - n * share) < 5 * np.sqrt(n * share * (1 - share)))
    for j, mean in enumerate(means):
        residual = x[nearest == j] - mean
        # Mean of ~10 000 unit normals: sd 0.01; variance estimate: sd ~0.014.
        assert np.all(np.abs(residual.mean(0)) < 0.06)
        assert np.all(np.abs(residual.var(0) - 1) < 0.08)


@pytest.mark.parametrize("nu", [0.1, 0.5, 1.0])
def test_linear_is_logistic_in_x(nu):
    dim = 100
    x = np.random.default_rng(0).normal(nu / 2, 1.5, (500, dim)).astype(np.float32)
    p = np.asarray(mixtures.true_probs("linear", nu, x))
    logit = nu * x.sum(1) - nu**2 * dim / 2  # log N(x; nu 1, I) - log N(x; 0, I)
    np.testing.assert_allclose(p[:, 1], 1 / (1 + np.exp(-logit)), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(p.sum(1), 1, rtol=1e-6)


@pytest.mark.parametrize("task", mixtures.TASKS)
def test_true_probs_equal_bayes_rule_on_the_densities(task):
    # Reference in float64 straight from the definition, in few dimensions where the components
    # overlap (so log-sum-exp and max over components differ) and exp() does not underflow.
    nu, dim = 1.2, 4
    x = np.random.default_rng(0).normal(nu / 2, 1.5, (300, dim))
    means = _expected_centres(task, nu, dim)  # (class, component, dim)
    density = np.exp(-0.5 * ((x[:, None, None, :] - means[None]) ** 2).sum(-1)).sum(-1)
    expected = density / density.sum(1, keepdims=True)
    np.testing.assert_allclose(mixtures.true_probs(task, nu, x), expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    ("task", "nu", "dim"),
    [
        ("linear", 0.1, 100),
        ("linear", 0.3, 100),
        ("xor", 0.6, 100),
        ("xor", 1.0, 100),
        ("xor", 1.5, 4),
    ],
)
@pytest.mark.parametrize("eta", [0.0, 0.25])
def test_true_probs_match_monte_carlo_label_frequencies(task, nu, dim, eta):
    """Within bins of the exact p(y=1 | x), the sampled labels are 1 at the bins' mean p."""
    n, rng = 100_000, np.random.default_rng(1)
    x, y = mixtures.sample(KEY, task, nu, n, dim)
    # Noise the labels as the study does, independently per example: replaced w.p. eta.
    replaced = rng.random(n) < eta
    y = np.where(replaced, rng.integers(0, 2, n), y)
    p = np.asarray(mixtures.true_probs(task, nu, x, label_noise=eta))[:, 1]
    for idx in np.array_split(np.argsort(p), 20):  # 5 000 points a bin
        # Given x the labels are independent Bernoulli(p), so the sd of their mean is known
        # (<= 0.007 here); 5 sds over 20 bins x 10 cases keeps false failures below 1e-4.
        sd = np.sqrt(np.sum(p[idx] * (1 - p[idx]))) / len(idx)
        assert abs(y[idx].mean() - p[idx].mean()) < 5 * sd + 1e-4
    assert p.min() < 0.3 and p.max() > 0.7, "bins should span confident and unsure points"


def test_labels_are_balanced():
    n = 100_000
    for task in mixtures.TASKS:
        _, y = mixtures.sample(KEY, task, 0.5, n, dim=4)
        assert abs(y.mean() - 0.5) < 5 * 0.5 / np.sqrt(n)


def test_label_noise_mixes_with_the_uniform_distribution():
    x, _ = mixtures.sample(KEY, "xor", 0.8, 200)
    p = mixtures.true_probs("xor", 0.8, x)
    for eta in (0.0, 0.05, 0.25, 1.0):
        noisy = mixtures.true_probs("xor", 0.8, x, label_noise=eta)
        np.testing.assert_allclose(noisy, (1 - eta) * p + eta / 2, rtol=1e-6, atol=1e-7)


def test_xor_symmetries():
    # Swapping the halves exchanges class 1's components; x -> nu 1 - x exchanges class 0's and
    # class 1's: neither changes p(y | x).
    nu, dim = 0.9, 10
    x, _ = mixtures.sample(KEY, "xor", nu, 100, dim)
    p = mixtures.true_probs("xor", nu, x)
    swapped = np.concatenate([x[:, dim // 2 :], x[:, : dim // 2]], axis=1)
    np.testing.assert_allclose(mixtures.true_probs("xor", nu, swapped), p, atol=1e-5)
    np.testing.assert_allclose(mixtures.true_probs("xor", nu, nu - x), p, atol=1e-5)


@pytest.mark.parametrize("task", mixtures.TASKS)
def test_true_probs_stable_far_from_the_centres(task):
    x = np.array([[1e4] * 10, [-1e4] * 10, [1e4] * 5 + [-1e4] * 5], np.float32)
    p = np.asarray(mixtures.true_probs(task, 1.0, x))
    assert np.all(np.isfinite(p))
    np.testing.assert_allclose(p.sum(1), 1, rtol=1e-6)


def test_true_probs_under_jit_and_on_numpy_input():
    x64 = np.random.default_rng(0).normal(0.5, 1, (20, 100))  # float64 numpy input
    jitted = jax.jit(mixtures.true_probs, static_argnums=0)
    for task in mixtures.TASKS:
        eager = mixtures.true_probs(task, 0.7, x64, 0.1)
        np.testing.assert_allclose(jitted(task, 0.7, x64, 0.1), eager, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(jitted(task, 0.7, jax.numpy.asarray(x64), 0.1), eager, rtol=1e-5)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: mixtures.sample(KEY, "circle", 1.0, 10), "task"),
        (lambda: mixtures.sample(KEY, "linear", -0.1, 10), "nu"),
        (lambda: mixtures.sample(KEY, "linear", 1.0, 0), "n must"),
        (lambda: mixtures.sample(KEY, "xor", 1.0, 10, dim=7), "even"),
        (lambda: mixtures.centres("xor", 1.0, 0), "dim"),
        (lambda: mixtures.true_probs("xor", 1.0, np.zeros((3, 5))), "even"),
        (lambda: mixtures.true_probs("linear", 1.0, np.zeros(5)), "shape"),
        (lambda: mixtures.true_probs("linear", -1.0, np.zeros((3, 5))), "nu"),
        (lambda: mixtures.true_probs("linear", 1.0, np.zeros((3, 5)), 1.5), "label_noise"),
        (lambda: mixtures.true_probs("linear", 1.0, np.zeros((3, 5)), -0.1), "label_noise"),
        (lambda: mixtures.true_probs("spiral", 1.0, np.zeros((3, 5))), "task"),
    ],
)
def test_bad_input_raises(call, message):
    with pytest.raises(ValueError, match=message):
        call()
