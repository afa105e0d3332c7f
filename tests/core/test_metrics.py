"""Tests for imp_jax.core.metrics: hand-computed cases, a plain-numpy reference, limiting cases, and
jit/vmap consistency."""

import functools
import itertools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imp_jax.core import metrics

NAN = float("nan")

# Four examples, three classes. With 5 bins the edges are 0.2, 0.4, 0.6, 0.8.
#   ex0: conf 0.7, predicts 0, label 0 -> correct, bin 3 (0.6, 0.8]
#   ex1: conf 0.5, predicts 1, label 2 -> wrong,   bin 2 (0.4, 0.6]
#   ex2: conf 0.8, predicts 2, label 2 -> correct, bin 3 (exactly on the edge 0.8: lower bin)
#   ex3: conf 0.9, predicts 0, label 1 -> wrong,   bin 4 (0.8, 1.0]
HAND_PROBS = jnp.array(
    [[0.7, 0.2, 0.1], [0.3, 0.5, 0.2], [0.1, 0.1, 0.8], [0.9, 0.05, 0.05]], dtype=jnp.float32
)
HAND_LABELS = jnp.array([0, 2, 2, 1])


# Random cases share one shape so that eagerly compiled operations are reused across tests.
N, K = 500, 4


def _random_case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(N, K)) * rng.uniform(0.5, 4.0)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return probs.astype(np.float32), rng.integers(0, K, size=N)


def _np_bin_stats(conf, correct, num_bins, binning):
    """Per-bin (count, mean confidence, accuracy), written with explicit loops over bins."""
    n = len(conf)
    if binning == "equal_width":
        edges = np.linspace(0.0, 1.0, num_bins + 1)
        members = [(conf > lo) & (conf <= hi) for lo, hi in itertools.pairwise(edges)]
    else:
        order = np.argsort(conf, kind="stable")
        # Bin b holds ranks [ceil(b n / B), ceil((b + 1) n / B)).
        starts = [-(-b * n // num_bins) for b in range(num_bins + 1)]
        members = []
        for lo, hi in itertools.pairwise(starts):
            mask = np.zeros(n, dtype=bool)
            mask[order[lo:hi]] = True
            members.append(mask)
    stats = []
    for mask in members:
        k = int(mask.sum())
        stats.append((k, conf[mask].mean() if k else NAN, correct[mask].mean() if k else NAN))
    return [np.array(s) for s in zip(*stats, strict=True)]


def _np_metrics(probs, labels, num_bins):
    probs = probs.astype(np.float64)
    n, num_classes = probs.shape
    conf, pred = probs.max(-1), probs.argmax(-1)
    correct = (pred == labels).astype(np.float64)
    out = {
        "error": 1.0 - correct.mean(),
        "nll": -np.mean(np.log(probs[np.arange(n), labels])),
        "brier": np.mean(np.sum((probs - np.eye(num_classes)[labels]) ** 2, -1)),
        "overconfidence": conf.mean() - correct.mean(),
        "mean_confidence": conf.mean(),
    }
    for prefix, binning in (("ece", "equal_width"), ("ece_em", "equal_mass")):
        count, bconf, bacc = _np_bin_stats(conf, correct, num_bins, binning)
        gaps = np.where(count > 0, np.abs(np.nan_to_num(bacc - bconf)), 0.0)
        out[f"{prefix}_{num_bins}"] = np.sum(count / n * gaps)
        if binning == "equal_width":
            out[f"mce_{num_bins}"] = gaps.max()
    return out


def test_hand_computed_scalars():
    p, y = HAND_PROBS, HAND_LABELS
    # ex1 and ex3 are wrong: 2 / 4.
    np.testing.assert_allclose(metrics.error(p, y), 0.5)
    # -(log 0.7 + log 0.2 + log 0.8 + log 0.05) / 4
    # = (0.356675 + 1.609438 + 0.223144 + 2.995732) / 4 = 1.296247
    np.testing.assert_allclose(metrics.nll(jnp.log(p), y), 1.296247, rtol=1e-5)
    # Per example: 0.09+0.04+0.01=0.14; 0.09+0.25+0.64=0.98; 0.01+0.01+0.04=0.06;
    # 0.81+0.9025+0.0025=1.715. Mean: 2.895 / 4 = 0.72375.
    np.testing.assert_allclose(metrics.brier(p, y), 0.72375, rtol=1e-5)
    # Bins 2: {ex1} |0 - 0.5| = 0.5; 3: {ex0, ex2} |1 - 0.75| = 0.25; 4: {ex3} |0 - 0.9| = 0.9.
    # ECE = 1/4 * 0.5 + 2/4 * 0.25 + 1/4 * 0.9 = 0.125 + 0.125 + 0.225 = 0.475; MCE = 0.9.
    np.testing.assert_allclose(metrics.ece(p, y, num_bins=5), 0.475, rtol=1e-5)
    np.testing.assert_allclose(metrics.mce(p, y, num_bins=5), 0.9, rtol=1e-5)
    # Sorted confidences 0.5(wrong) 0.7(right) | 0.8(right) 0.9(wrong), two bins of two:
    # 2/4 * |0.5 - 0.6| + 2/4 * |0.5 - 0.85| = 0.05 + 0.175 = 0.225.
    np.testing.assert_allclose(
        metrics.ece(p, y, num_bins=2, binning="equal_mass"), 0.225, rtol=1e-5
    )
    # Mean confidence (0.7 + 0.5 + 0.8 + 0.9) / 4 = 0.725, accuracy 0.5.
    np.testing.assert_allclose(metrics.overconfidence(p, y), 0.225, rtol=1e-5)


def test_hand_computed_tables():
    p, y = HAND_PROBS, HAND_LABELS
    table = metrics.reliability_table(p, y, num_bins=5)
    np.testing.assert_array_equal(table.count, [0, 0, 1, 2, 1])
    np.testing.assert_allclose(table.confidence, [NAN, NAN, 0.5, 0.75, 0.9], rtol=1e-6)
    np.testing.assert_allclose(table.accuracy, [NAN, NAN, 0.0, 1.0, 0.0])
    em = metrics.reliability_table(p, y, num_bins=2, binning="equal_mass")
    np.testing.assert_array_equal(em.count, [2, 2])
    np.testing.assert_allclose(em.confidence, [0.6, 0.85], rtol=1e-6)
    np.testing.assert_allclose(em.accuracy, [0.5, 0.5])
    np.testing.assert_array_equal(metrics.confidence_histogram(p, num_bins=5), [0, 0, 1, 2, 1])
    # The 12 (p(y=k|x), [y == k]) pairs by bin:
    #   (0, 0.2]:   0.2(0) 0.1(0) | 0.2(1) | 0.1(0) 0.1(0) | 0.05(1) 0.05(0)
    #               -> 7 pairs, mean p 0.8 / 7, frequency 2 / 7
    #   (0.2, 0.4]: 0.3(0); (0.4, 0.6]: 0.5(0); (0.6, 0.8]: 0.7(1) 0.8(1); (0.8, 1]: 0.9(0)
    curve = metrics.class_averaged_calibration(p, y, num_bins=5)
    np.testing.assert_array_equal(curve.count, [7, 1, 1, 2, 1])
    np.testing.assert_allclose(curve.predicted, [0.8 / 7, 0.3, 0.5, 0.75, 0.9], rtol=1e-6)
    np.testing.assert_allclose(curve.observed, [2 / 7, 0.0, 0.0, 1.0, 0.0])


def test_bin_edges_go_to_lower_bin():
    # Binary confidences on the edges 0.6 and 0.8 of 5 bins, at 1.0, and one float32 step
    # above 0.6: counts per bin (0, .2] (.2, .4] (.4, .6] (.6, .8] (.8, 1] are 0 0 1 2 1.
    conf = jnp.array([0.6, 0.8, 1.0, 0.6000001], dtype=jnp.float32)
    probs = jnp.stack([conf, 1.0 - conf], axis=-1)
    np.testing.assert_array_equal(metrics.confidence_histogram(probs, num_bins=5), [0, 0, 1, 2, 1])


def test_hand_computed_distances_to_truth():
    # Binary: |0.3 - 0.4| = 0.1 and |0.8 - 0.5| = 0.3, mean 0.2.
    model = jnp.array([[0.7, 0.3], [0.2, 0.8]])
    true = jnp.array([[0.6, 0.4], [0.5, 0.5]])
    np.testing.assert_allclose(metrics.mean_abs_prob_error(model, true), 0.2, rtol=1e-6)
    # ex0: 0.5 log(0.5/0.25) + 0.5 log(0.5/0.75) = 0.5 log(4/3) = 0.143841;
    # ex1: 1 log(1/0.5) + 0 log 0 = log 2 = 0.693147. Mean 0.418494.
    kl = metrics.kl_true_model(
        jnp.array([[0.5, 0.5], [1.0, 0.0]]), jnp.array([[0.25, 0.75], [0.5, 0.5]])
    )
    np.testing.assert_allclose(kl, 0.5 * (0.5 * math.log(4 / 3) + math.log(2)), rtol=1e-5)


def test_kl_edge_cases():
    p_true = jnp.array([[1.0, 0.0, 0.0], [0.2, 0.3, 0.5]])
    np.testing.assert_allclose(metrics.kl_true_model(p_true, p_true), 0.0, atol=1e-7)
    # A class the model rules out completely costs a large but finite amount.
    ruled_out = metrics.kl_true_model(p_true, jnp.array([[0.0, 1.0, 0.0]] * 2))
    assert np.isfinite(ruled_out) and ruled_out > 10


@pytest.mark.parametrize("seed", [0, 1])
def test_distances_match_numpy(seed):
    p_model, _ = _random_case(seed)
    p_true, _ = _random_case(seed + 100)
    p_true[:20, 0] = 0.0  # exercise 0 log 0
    p_true /= p_true.sum(-1, keepdims=True)
    pt, pm = p_true.astype(np.float64), p_model.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(pt > 0, pt * np.log(pt / pm), 0.0)
    np.testing.assert_allclose(metrics.kl_true_model(p_true, p_model), terms.sum(-1).mean(), 1e-5)
    np.testing.assert_allclose(
        metrics.mean_abs_prob_error(p_model, p_true), 0.5 * np.abs(pm - pt).sum(-1).mean(), 1e-5
    )
    binary = (
        np.stack([p_model[:, 0], 1 - p_model[:, 0]], -1),
        np.stack([p_true[:, 0], 1 - p_true[:, 0]], -1),
    )
    np.testing.assert_allclose(
        metrics.mean_abs_prob_error(*binary), np.abs(binary[0][:, 0] - binary[1][:, 0]).mean(), 1e-5
    )


@pytest.mark.parametrize(("seed", "num_bins"), [(0, 15), (1, 7)])
def test_matches_numpy_reference(seed, num_bins):
    probs, labels = _random_case(seed)
    got = metrics.classification_metrics(jnp.log(probs), labels, num_bins=num_bins)
    want = _np_metrics(probs, labels, num_bins)
    assert set(got) == set(want)
    for key, value in want.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-4, atol=1e-6, err_msg=key)

    conf = probs.max(-1).astype(np.float64)
    correct = (probs.argmax(-1) == labels).astype(np.float64)
    for binning in ("equal_width", "equal_mass"):
        table = metrics.reliability_table(probs, labels, num_bins, binning=binning)
        for got_col, want_col in zip(
            table, _np_bin_stats(conf, correct, num_bins, binning), strict=True
        ):
            np.testing.assert_allclose(got_col, want_col, rtol=1e-5, err_msg=binning)

    counts = np.zeros(num_bins)
    sums = np.zeros((2, num_bins))
    flat_p, flat_hit = probs.ravel().astype(np.float64), np.eye(K)[labels].ravel()
    for b in range(num_bins):
        mask = (flat_p > b / num_bins) & (flat_p <= (b + 1) / num_bins)
        if b == 0:
            mask |= flat_p == 0.0
        counts[b], sums[0, b], sums[1, b] = mask.sum(), flat_p[mask].sum(), flat_hit[mask].sum()
    curve = metrics.class_averaged_calibration(probs, labels, num_bins)
    np.testing.assert_array_equal(curve.count, counts)
    with np.errstate(invalid="ignore"):
        np.testing.assert_allclose(curve.predicted, sums[0] / counts, rtol=1e-5)
        np.testing.assert_allclose(curve.observed, sums[1] / counts, rtol=1e-5)


@pytest.mark.parametrize("binning", ["equal_width", "equal_mass"])
def test_ece_bounds(binning):
    probs, labels = _random_case(3)
    # One bin: ECE is |mean confidence - accuracy|; more bins can only add to the sum.
    over = abs(float(metrics.overconfidence(probs, labels)))
    np.testing.assert_allclose(metrics.ece(probs, labels, 1, binning), over, rtol=1e-5)
    assert over - 1e-6 <= metrics.ece(probs, labels, 15, binning) <= 1.0


def test_nll_accepts_logits_or_log_probs():
    probs, labels = _random_case(4)
    logits = jnp.log(probs) + 3.0  # a constant shift leaves the softmax unchanged
    want = -np.mean(np.log(probs[np.arange(len(labels)), labels].astype(np.float64)))
    for x in (logits, jax.nn.log_softmax(logits), jnp.log(probs)):
        np.testing.assert_allclose(metrics.nll(x, labels), want, rtol=1e-5)


def test_perfectly_calibrated_predictor_has_small_ece():
    n, num_classes = 200_000, 3
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.full(num_classes, 0.7), size=n).astype(np.float32)
    labels = (rng.random((n, 1)) > np.cumsum(probs, -1)).sum(-1).clip(0, num_classes - 1)
    assert metrics.ece(probs, labels) < 0.01
    assert metrics.ece(probs, labels, binning="equal_mass") < 0.01
    curve = metrics.class_averaged_calibration(probs, labels, num_bins=10)
    np.testing.assert_allclose(curve.observed, curve.predicted, atol=0.01)


def test_confident_and_always_wrong_predictor():
    pred = np.arange(N) % K
    probs = np.full((N, K), 1e-6 / (K - 1), dtype=np.float32)
    probs[np.arange(N), pred] = 1.0 - 1e-6
    labels = (pred + 1) % K
    for fn in (metrics.ece, metrics.mce, metrics.overconfidence):
        np.testing.assert_allclose(fn(probs, labels), 1.0, atol=1e-5)
    np.testing.assert_allclose(metrics.error(probs, labels), 1.0)


def test_equal_mass_bins_have_equal_counts():
    probs, labels = _random_case(5)  # 500 = 5 * 34 + 10 * 33
    table = metrics.reliability_table(probs, labels, num_bins=15, binning="equal_mass")
    assert int(table.count.sum()) == N
    assert set(np.asarray(table.count).tolist()) == {33, 34}
    assert np.all(np.diff(table.confidence) >= 0)


def test_jit_and_vmap_match_eager():
    replicates = [_random_case(seed) for seed in (10, 11, 12)]
    logits = jnp.log(jnp.stack([p for p, _ in replicates]))
    labels = jnp.asarray(replicates[0][1])
    batched = jax.jit(
        jax.vmap(functools.partial(metrics.classification_metrics, num_bins=15), in_axes=(0, None))
    )(logits, labels)
    for r in range(3):
        eager = metrics.classification_metrics(logits[r], labels, num_bins=15)
        chex.assert_trees_all_close(jax.tree.map(lambda x, r=r: x[r], batched), eager, rtol=1e-6)

    probs = jax.nn.softmax(logits)
    for fn in (
        functools.partial(metrics.reliability_table, labels=labels, binning="equal_mass"),
        functools.partial(metrics.class_averaged_calibration, labels=labels),
    ):
        out = jax.jit(jax.vmap(fn))(probs)
        for r in range(3):
            chex.assert_trees_all_close(jax.tree.map(lambda x, r=r: x[r], out), fn(probs[r]))
    kl = jax.jit(jax.vmap(metrics.kl_true_model, in_axes=(None, 0)))(probs[0], probs)
    np.testing.assert_allclose(kl[0], 0.0, atol=1e-6)
    np.testing.assert_allclose(kl[1], metrics.kl_true_model(probs[0], probs[1]), rtol=1e-6)


def test_low_precision_inputs_are_summed_in_float32():
    probs, labels = _random_case(6)
    low = jnp.asarray(probs, dtype=jnp.bfloat16)
    got = metrics.classification_metrics(jnp.log(low), labels)
    assert all(v.dtype == jnp.float32 for v in got.values())
    np.testing.assert_allclose(
        metrics.ece(low, labels), metrics.ece(low.astype(jnp.float32), labels), rtol=1e-6
    )


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="binning"):
        metrics.ece(HAND_PROBS, HAND_LABELS, binning="quantile")
    with pytest.raises(ValueError, match="expected probs"):
        metrics.error(HAND_PROBS, HAND_LABELS[:3])


def test_per_class_calibration_against_a_loop():
    probs, labels = _random_case(6)
    num_bins = 7
    curve = metrics.per_class_calibration(probs, labels, num_bins)
    assert curve.count.shape == (K, num_bins)
    for k in range(K):
        p, hit = probs[:, k].astype(np.float64), (labels == k).astype(np.float64)
        for b in range(num_bins):
            mask = (p > b / num_bins) & (p <= (b + 1) / num_bins)
            if b == 0:
                mask |= p == 0.0
            assert int(curve.count[k, b]) == mask.sum()
            if mask.any():
                np.testing.assert_allclose(curve.predicted[k, b], p[mask].mean(), rtol=1e-5)
                np.testing.assert_allclose(curve.observed[k, b], hit[mask].mean(), rtol=1e-5)
            else:
                assert np.isnan(curve.predicted[k, b]) and np.isnan(curve.observed[k, b])
    pooled = metrics.class_averaged_calibration(probs, labels, num_bins)
    np.testing.assert_array_equal(curve.count.sum(0), pooled.count)
