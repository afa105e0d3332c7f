"""Classification and calibration metrics: error, NLL, Brier, ECE/MCE, reliability bins, and
distances between a model's predictive distribution and a known true p(y|x).

Every function is pure and jittable and takes arrays for a single model: predicted probabilities
``probs`` of shape (n, K) (or logits where stated) and integer ``labels`` of shape (n,) in [0, K).
Bin counts and binning schemes are Python values and must be static under ``jax.jit``
(``static_argnames=("num_bins", "binning")``). A leading replicate axis is handled with
``jax.vmap``.

Binning follows Guo et al. (2017), "On calibration of modern neural networks": the interval
(0, 1] is split into ``num_bins`` equal-width bins ``(b/B, (b+1)/B]``, so a value exactly on an
edge (as represented in the input's dtype) belongs to the lower bin, as in Guo's reference code.
A value of exactly 0 goes to the first bin. Equal-mass binning instead sorts the examples by
confidence and cuts the sorted list into ``num_bins`` runs whose sizes differ by at most one;
examples with tied confidence may then land in neighbouring bins.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import xlogy

Binning = Literal["equal_width", "equal_mass"]


class ReliabilityTable(NamedTuple):
    """Per-bin statistics of the predicted class (the data behind a reliability diagram).

    Attributes:
      count: (num_bins,) int32, examples per bin.
      confidence: (num_bins,) mean max-probability in the bin; NaN for empty bins.
      accuracy: (num_bins,) fraction of correct predictions in the bin; NaN for empty bins.
    """

    count: jax.Array
    confidence: jax.Array
    accuracy: jax.Array


class CalibrationCurve(NamedTuple):
    """One-vs-rest calibration curve: pooled over classes (:func:`class_averaged_calibration`,
    shapes (num_bins,)) or one per class (:func:`per_class_calibration`, (num_classes,
    num_bins)).

    Attributes:
      count: int32, (example, class) pairs per bin.
      predicted: mean predicted p(y=k|x) in the bin; NaN for empty bins.
      observed: fraction of those pairs whose label is k; NaN for empty bins.
    """

    count: jax.Array
    predicted: jax.Array
    observed: jax.Array


def _as_float(x: jax.Array) -> jax.Array:
    # Sums over up to 1e5 examples would lose most of their digits in bfloat16/float16.
    x = jnp.asarray(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _validate(probs: jax.Array, labels: jax.Array) -> jax.Array:
    """Checks shapes (static under jit, so free at run time); returns probs as >= float32."""
    if jnp.ndim(probs) != 2 or jnp.shape(labels) != jnp.shape(probs)[:1]:
        raise ValueError(
            f"expected probs (n, K) and labels (n,), got {jnp.shape(probs)} and {jnp.shape(labels)}"
        )
    return _as_float(probs)


def _confidence_and_correct(probs: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    probs = _validate(probs, labels)
    correct = (jnp.argmax(probs, axis=-1) == labels).astype(probs.dtype)
    return jnp.max(probs, axis=-1), correct


def _equal_width_bins(values: jax.Array, num_bins: int) -> jax.Array:
    """Bin index of each value for the bins (b/B, (b+1)/B], values <= 0 to bin 0, > 1 to B-1."""
    # Inner edges computed in float64 then cast, so an edge equals the input-dtype value nearest
    # to b/B and a value sitting on it compares equal (-> lower bin) instead of off by an ulp.
    inner_edges = jnp.asarray(np.arange(1, num_bins) / num_bins, dtype=values.dtype)
    # side="left" counts the edges strictly below each value, i.e. its (lower, upper] bin.
    return jnp.searchsorted(inner_edges, values, side="left", method="compare_all")


def _binned_sums(
    confidence: jax.Array, correct: jax.Array, num_bins: int, binning: Binning
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per-bin (count, sum of confidence, sum of correct) for the chosen binning."""
    if binning == "equal_width":
        bins = _equal_width_bins(confidence, num_bins)
    elif binning == "equal_mass":
        n = confidence.shape[0]
        order = jnp.argsort(confidence, stable=True)
        confidence, correct = confidence[order], correct[order]
        # Rank r goes to bin floor(r * B / n): bin sizes differ by at most one.
        bins = jnp.arange(n) * num_bins // n
    else:
        raise ValueError(f"binning must be 'equal_width' or 'equal_mass', got {binning!r}")
    count = jax.ops.segment_sum(jnp.ones_like(bins), bins, num_segments=num_bins)
    sum_conf = jax.ops.segment_sum(confidence, bins, num_segments=num_bins)
    sum_correct = jax.ops.segment_sum(correct, bins, num_segments=num_bins)
    return count, sum_conf, sum_correct


def _safe_mean(total: jax.Array, count: jax.Array) -> jax.Array:
    return jnp.where(count > 0, total / jnp.maximum(count, 1), jnp.nan)


def error(probs: jax.Array, labels: jax.Array) -> jax.Array:
    """Fraction of examples whose argmax (first index on ties) differs from the label.

    Works on logits as well as probabilities, since softmax preserves the argmax.
    """
    probs = _validate(probs, labels)
    return jnp.mean(jnp.argmax(probs, axis=-1) != labels, dtype=probs.dtype)


def nll(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean negative log-likelihood (cross-entropy) of the labels.

    Accepts logits or log-probabilities: the input is renormalised with ``log_softmax``, which
    leaves log-probabilities unchanged. For probabilities pass ``jnp.log(probs)``.
    """
    log_probs = jax.nn.log_softmax(_validate(logits, labels), axis=-1)
    return -jnp.mean(jnp.take_along_axis(log_probs, labels[:, None], axis=-1))


def brier(probs: jax.Array, labels: jax.Array) -> jax.Array:
    """Brier score: squared error to the one-hot label, summed over classes, mean over examples."""
    probs = _validate(probs, labels)
    one_hot = jax.nn.one_hot(labels, probs.shape[-1], dtype=probs.dtype)
    return jnp.mean(jnp.sum((probs - one_hot) ** 2, axis=-1))


def ece(
    probs: jax.Array, labels: jax.Array, num_bins: int = 15, binning: Binning = "equal_width"
) -> jax.Array:
    """Expected calibration error: sum_b (n_b / n) |accuracy_b - confidence_b|.

    ``binning="equal_width"`` is Guo et al.'s ECE; ``"equal_mass"`` uses bins holding equal
    numbers of examples.
    """
    confidence, correct = _confidence_and_correct(probs, labels)
    _, sum_conf, sum_correct = _binned_sums(confidence, correct, num_bins, binning)
    # (n_b / n) |acc_b - conf_b| = |sum_correct_b - sum_conf_b| / n: no division by empty bins.
    return jnp.sum(jnp.abs(sum_correct - sum_conf)) / confidence.shape[0]


def mce(
    probs: jax.Array, labels: jax.Array, num_bins: int = 15, binning: Binning = "equal_width"
) -> jax.Array:
    """Maximum calibration error: max over non-empty bins of |accuracy_b - confidence_b|."""
    confidence, correct = _confidence_and_correct(probs, labels)
    count, sum_conf, sum_correct = _binned_sums(confidence, correct, num_bins, binning)
    # Empty bins have zero sums, hence a zero gap, so they never win the max.
    return jnp.max(jnp.abs(sum_correct - sum_conf) / jnp.maximum(count, 1))


def reliability_table(
    probs: jax.Array, labels: jax.Array, num_bins: int = 15, binning: Binning = "equal_width"
) -> ReliabilityTable:
    """Per-bin count, mean confidence and accuracy of the predicted class.

    Empty bins have count 0 and NaN confidence/accuracy (matplotlib skips NaN points).
    """
    confidence, correct = _confidence_and_correct(probs, labels)
    count, sum_conf, sum_correct = _binned_sums(confidence, correct, num_bins, binning)
    return ReliabilityTable(count, _safe_mean(sum_conf, count), _safe_mean(sum_correct, count))


def class_averaged_calibration(
    probs: jax.Array, labels: jax.Array, num_bins: int = 15
) -> CalibrationCurve:
    """One-vs-rest calibration curve averaged over classes, with equal-width bins.

    For every class k, p(y=k|x) of every example is binned and compared with the frequency of
    label k in the bin; the per-class curves are averaged with weights equal to their bin counts,
    which is the same as pooling all n*K (probability, indicator) pairs. Probabilities of exactly
    0 fall in the first bin.
    """
    probs = _validate(probs, labels)
    one_hot = jax.nn.one_hot(labels, probs.shape[-1], dtype=probs.dtype)
    pred, hit = probs.reshape(-1), one_hot.reshape(-1)
    bins = _equal_width_bins(pred, num_bins)
    count = jax.ops.segment_sum(jnp.ones_like(bins), bins, num_segments=num_bins)
    sum_pred = jax.ops.segment_sum(pred, bins, num_segments=num_bins)
    sum_hit = jax.ops.segment_sum(hit, bins, num_segments=num_bins)
    return CalibrationCurve(count, _safe_mean(sum_pred, count), _safe_mean(sum_hit, count))


def per_class_calibration(
    probs: jax.Array, labels: jax.Array, num_bins: int = 15
) -> CalibrationCurve:
    """One-vs-rest calibration curve of every class, with equal-width bins.

    For class k, p(y=k|x) of every example is binned and compared with the frequency of label
    k in the bin. Returns a :class:`CalibrationCurve` whose fields have shape
    (num_classes, num_bins), NaN where a class has no example in a bin. The study's
    class-averaged curve is their mean over classes (``nanmean`` along axis 0), with the
    spread between classes around it; :func:`class_averaged_calibration` pools the pairs
    instead.
    """
    probs = _validate(probs, labels)
    k = probs.shape[-1]
    one_hot = jax.nn.one_hot(labels, k, dtype=probs.dtype)
    # One segment per (class, bin): class-major, so a reshape gives (num_classes, num_bins).
    segments = (jnp.arange(k) * num_bins + _equal_width_bins(probs, num_bins)).reshape(-1)

    def total(values: jax.Array) -> jax.Array:
        return jax.ops.segment_sum(values.reshape(-1), segments,
                                   num_segments=k * num_bins).reshape(k, num_bins)

    count = total(jnp.ones_like(probs, dtype=jnp.int32))
    return CalibrationCurve(count, _safe_mean(total(probs), count),
                            _safe_mean(total(one_hot), count))


def overconfidence(probs: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean confidence (max probability) minus accuracy; positive means overconfident."""
    confidence, correct = _confidence_and_correct(probs, labels)
    return jnp.mean(confidence) - jnp.mean(correct)


def confidence_histogram(probs: jax.Array, num_bins: int = 15) -> jax.Array:
    """Counts (int32, (num_bins,)) of the predicted class's probability in equal-width bins."""
    bins = _equal_width_bins(jnp.max(_as_float(probs), axis=-1), num_bins)
    return jax.ops.segment_sum(jnp.ones_like(bins), bins, num_segments=num_bins)


def abs_prob_errors(probs: jax.Array, p_true: jax.Array) -> jax.Array:
    """Per-example total-variation distance 0.5 * sum_k |p_model - p_true|: shape (n,).

    For K = 2 this is |p_model(y=1|x) - p_true(y=1|x)|.
    """
    diff = _as_float(probs) - _as_float(p_true)
    return 0.5 * jnp.sum(jnp.abs(diff), axis=-1)


def mean_abs_prob_error(probs: jax.Array, p_true: jax.Array) -> jax.Array:
    """Mean of :func:`abs_prob_errors` over examples."""
    return jnp.mean(abs_prob_errors(probs, p_true))


def kl_true_model(p_true: jax.Array, probs: jax.Array) -> jax.Array:
    """Mean KL(p_true || p_model) over examples, with 0 log 0 = 0.

    Model probabilities are clipped below at the dtype's smallest normal number so that a class
    the model rules out (softmax underflow) gives a large but finite penalty.
    """
    p_true, probs = _as_float(p_true), _as_float(probs)
    q = jnp.clip(probs, jnp.finfo(probs.dtype).tiny, 1.0)
    return jnp.mean(jnp.sum(xlogy(p_true, p_true) - xlogy(p_true, q), axis=-1))


def classification_metrics(
    logits: jax.Array, labels: jax.Array, num_bins: int = 15
) -> dict[str, jax.Array]:
    """All scalar metrics of one model's logits on one labelled set.

    Returns a dict with keys ``error``, ``nll``, ``brier``, ``ece_<B>``, ``mce_<B>``,
    ``ece_em_<B>`` (equal-mass bins), ``overconfidence`` and ``mean_confidence``, where ``<B>``
    is ``num_bins``. Jittable (``num_bins`` static) and vmappable over a leading axis.
    """
    log_probs = jax.nn.log_softmax(_validate(logits, labels), axis=-1)
    probs = jnp.exp(log_probs)
    # Under jit, XLA's common-subexpression elimination shares the argmax/max/binning work of
    # the calls below.
    return {
        "error": error(probs, labels),
        "nll": nll(log_probs, labels),
        "brier": brier(probs, labels),
        f"ece_{num_bins}": ece(probs, labels, num_bins),
        f"mce_{num_bins}": mce(probs, labels, num_bins),
        f"ece_em_{num_bins}": ece(probs, labels, num_bins, binning="equal_mass"),
        "overconfidence": overconfidence(probs, labels),
        "mean_confidence": jnp.mean(jnp.max(probs, axis=-1)),
    }
