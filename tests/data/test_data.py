"""Tests for imp_jax.data.datasets: label noise, mixtures and tfds datasets in memory."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from imp_jax.data import datasets, noise, preparation

KEY = jax.random.key(0)
FASHION_MNIST_ARCHIVES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


# --- add_label_noise ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "fraction"), [(1000, 0.0), (1000, 0.2), (999, 0.25), (7, 0.5), (50, 1)]
)
def test_label_noise_relabels_exactly_round_fraction_n(n, fraction):
    # With 2**31 - 1 classes a relabelled example keeps its label with probability ~5e-10, so
    # the changed examples are exactly the chosen ones.
    labels = np.zeros(n, np.int32)
    noisy, changed = noise.add_label_noise(KEY, labels, fraction, 2**31 - 1)
    assert changed.sum() == round(fraction * n)
    np.testing.assert_array_equal(changed, noisy != labels)
    assert noisy.dtype == labels.dtype and not labels.any(), "input must stay untouched"


def test_label_noise_draws_over_all_classes():
    n, fraction, k = 20_000, 0.5, 10
    labels = np.random.default_rng(0).integers(0, k, n).astype(np.int32)
    noisy, changed = noise.add_label_noise(KEY, labels, fraction, k)
    # Of the 10 000 chosen, each keeps its label with probability 1/k: 9 000 change, sd 30.
    chosen = round(fraction * n)
    assert abs(changed.sum() - chosen * (1 - 1 / k)) < 5 * np.sqrt(chosen * (1 - 1 / k) / k)
    np.testing.assert_array_equal(noisy[~changed], labels[~changed])
    # The new labels are uniform over the classes: ~900 of each among the changed, sd ~28.
    assert np.all(np.abs(np.bincount(noisy[changed], minlength=k) - changed.sum() / k) < 150)


def test_label_noise_is_reproducible_per_key():
    labels = np.arange(1000, dtype=np.int32) % 10
    first = noise.add_label_noise(KEY, labels, 0.3, 10)
    again = noise.add_label_noise(KEY, labels, 0.3, 10)
    other = noise.add_label_noise(jax.random.key(1), labels, 0.3, 10)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[1], other[1])


@pytest.mark.parametrize(
    ("labels", "fraction", "message"),
    [
        (np.zeros(5, np.int32), 1.5, "fraction"),
        (np.zeros(5, np.int32), -0.1, "fraction"),
        (np.array([0, 3]), 0.5, r"\[0, num_classes=3\)"),
        (np.array([-1, 0]), 0.5, "num_classes"),
        (np.zeros((2, 2), np.int32), 0.5, "one-dimensional"),
    ],
)
def test_label_noise_bad_input(labels, fraction, message):
    with pytest.raises(ValueError, match=message):
        noise.add_label_noise(KEY, labels, fraction, 3)


# --- mixtures ----------------------------------------------------------------------------------


def _mixture(**kwargs) -> datasets.Dataset:
    settings = {"key": KEY, "label_noise": 0.25, "mixture_nu": 1.0, "mixture_dim": 10}
    return datasets.load_dataset("mixture_xor", **(settings | kwargs))


def test_mixture_dataset_defaults():
    ds = datasets.load_dataset("mixture_linear", key=KEY, label_noise=0.05, mixture_nu=0.5)
    assert ds.name == "mixture_linear" and ds.num_classes == 2
    assert ds.x_train.shape == (10_000, 100) and ds.x_test.shape == (5_000, 100)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    assert ds.n_train == 10_000 and ds.n_test == 5_000 and ds.input_shape == (100,)
    assert ds.x_val is None and ds.y_val is None
    # round(0.05 * 10 000) = 500 relabelled, half of them to the same class.
    assert ds.corrupted.sum() <= 500 and abs(ds.corrupted.sum() - 250) < 5 * np.sqrt(125)


def test_mixture_dataset_noise():
    ds = _mixture()
    np.testing.assert_array_equal(ds.corrupted, ds.y_train != ds.y_train_clean)
    assert abs(ds.corrupted.mean() - 0.125) < 0.02
    assert abs(np.mean(ds.y_test_noisy != ds.y_test) - 0.125) < 0.025
    clean = _mixture(label_noise=0.0)
    np.testing.assert_array_equal(clean.y_train, clean.y_train_clean)
    np.testing.assert_array_equal(clean.y_test, clean.y_test_noisy)
    assert not clean.corrupted.any()
    # The noise does not move the data itself.
    np.testing.assert_array_equal(clean.x_train, ds.x_train)
    np.testing.assert_array_equal(clean.y_train_clean, ds.y_train_clean)


def test_mixture_dataset_depends_on_the_key_only():
    first, again, other = _mixture(), _mixture(), _mixture(key=jax.random.key(1))
    for field in ("x_train", "y_train", "x_test", "y_test_noisy"):
        np.testing.assert_array_equal(getattr(first, field), getattr(again, field))
        assert not np.array_equal(getattr(first, field), getattr(other, field))
    # The test set and its noise are their own streams: a training subset leaves them alone.
    subset = _mixture(train_subset=100)
    np.testing.assert_array_equal(subset.x_test, first.x_test)
    np.testing.assert_array_equal(subset.y_test_noisy, first.y_test_noisy)


def test_subset_and_validation_split_are_disjoint_parts_of_the_training_set():
    full = _mixture(label_noise=0.0)
    ds = _mixture(train_subset=300, validation_size=200)
    assert ds.x_train.shape == (300, 10) and ds.x_val.shape == (200, 10)
    assert ds.y_val.shape == (200,) and ds.corrupted.shape == (300,)
    # Continuous inputs: a row's first coordinate identifies it.
    ids = {v: i for i, v in enumerate(full.x_train[:, 0])}
    train = np.array([ids[v] for v in ds.x_train[:, 0]])
    val = np.array([ids[v] for v in ds.x_val[:, 0]])
    assert not set(train) & set(val)
    np.testing.assert_array_equal(ds.x_train, full.x_train[train])
    np.testing.assert_array_equal(ds.y_train_clean, full.y_train[train])
    # Validation labels are noised like the training ones (a quarter relabelled, half changed).
    changed = np.sum(ds.y_val != full.y_train[val])
    assert 0 < changed <= 50
    only_val = _mixture(validation_size=200)
    assert only_val.n_train == 10_000 - 200


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"task": "cifar7"}, "unknown dataset"),
        ({"mixture_nu": None}, "mixture_nu"),
        ({"label_noise": 1.2}, "label_noise"),
        ({"train_subset": 10_001}, "10000 training examples"),
        ({"train_subset": 9_000, "validation_size": 1_001}, "more than"),
        ({"validation_size": 10_000}, "more than"),
        ({"train_subset": -1}, ">= 0"),
        ({"mixture_dim": 7}, "even"),
    ],
)
def test_load_dataset_bad_input(kwargs, message):
    settings = {"task": "mixture_xor", "key": KEY, "mixture_nu": 1.0, "mixture_dim": 10}
    with pytest.raises(ValueError, match=message):
        datasets.load_dataset(**(settings | kwargs))


# --- tfds --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist(mnist_tfds) -> datasets.Dataset:
    return datasets.load_dataset(
        "mnist", key=KEY, label_noise=0.2, train_subset=3000, validation_size=1000, **mnist_tfds
    )


def test_mnist_shapes_and_labels(mnist):
    assert mnist.name == "mnist" and mnist.num_classes == 10
    assert mnist.x_train.shape == (3000, 28, 28, 1) and mnist.x_train.dtype == np.float32
    assert mnist.x_val.shape == (1000, 28, 28, 1) and mnist.y_val.shape == (1000,)
    assert mnist.x_test.shape == (10_000, 28, 28, 1) and mnist.x_test.dtype == np.float32
    for labels in (mnist.y_train, mnist.y_train_clean, mnist.y_test, mnist.y_val):
        assert labels.dtype == np.int32
        np.testing.assert_array_equal(np.unique(labels), np.arange(10))


def test_mnist_is_normalised(mnist):
    # The constants are the training set's mean and std: about 0 and 1 on any large part of it,
    # and on the test set too (0.006 and 1.008 there).
    for x in (mnist.x_train, mnist.x_test):
        assert abs(x.mean()) < 0.03 and abs(x.std() - 1) < 0.03
    assert mnist.x_test.min() == pytest.approx(-0.1307 / 0.3081)
    assert mnist.x_test.max() == pytest.approx((1 - 0.1307) / 0.3081)


def test_mnist_label_noise(mnist):
    # round(0.2 * 3000) = 600 relabelled, of which 9/10 change: 540, sd 7.3.
    assert mnist.corrupted.sum() <= 600 and abs(mnist.corrupted.sum() - 540) < 37
    np.testing.assert_array_equal(mnist.corrupted, mnist.y_train != mnist.y_train_clean)
    assert abs(np.mean(mnist.y_test_noisy != mnist.y_test) - 0.18) < 0.02


def test_tensorflow_sees_no_gpu(mnist_tfds):
    """Preparing MNIST for the session imported TensorFlow, kept off the GPUs."""
    import tensorflow as tf

    assert tf.config.get_visible_devices("GPU") == []


@pytest.mark.slow
def test_tfds_loading_code_on_mock_data(tmp_path):
    """fashion_mnist is not on disk: tfds' mock serves random examples through the same code."""
    import tensorflow_datasets as tfds

    manual_dir = tmp_path / "archives"
    manual_dir.mkdir()
    for name in FASHION_MNIST_ARCHIVES:  # what preparing offline would read (mocked here)
        (manual_dir / name).touch()
    with tfds.testing.mock_data(num_examples=40):
        x_train, y_train, x_test, y_test, k = preparation.load_tfds(
            "fashion_mnist", data_dir=tmp_path, manual_dir=manual_dir
        )
        ds = datasets.load_dataset(
            "fashion_mnist",
            key=KEY,
            label_noise=0.5,
            train_subset=20,
            validation_size=8,
            data_dir=tmp_path,
            manual_dir=manual_dir,
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["archives"], "mock data is not cached"
    assert k == 10 and x_train.dtype == np.uint8 and x_train.shape == (40, 28, 28, 1)
    assert x_test.shape == (40, 28, 28, 1) and y_train.dtype == y_test.dtype == np.int32
    assert y_train.min() >= 0 and y_train.max() < 10
    assert ds.x_train.shape == (20, 28, 28, 1) and ds.x_val.shape == (8, 28, 28, 1)
    np.testing.assert_allclose(ds.x_test, (x_test / 255 - 0.2860) / 0.3530, rtol=1e-5, atol=1e-6)


def test_unprepared_dataset_without_archives_says_where_to_get_them(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"lacks \[.*t10k-labels-idx1-ubyte.gz from http"):
        datasets.load_dataset("fashion_mnist", key=KEY, data_dir=tmp_path, manual_dir=empty)


def test_normalise_images_per_channel():
    images = np.array([[[[0, 255, 51]]]], np.uint8)  # (1, 1, 1, 3)
    out = datasets.normalise_images(images, (0.0, 0.5, 0.1), (1.0, 0.5, 0.2))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0, 0, 0], [0.0, 1.0, 0.5], atol=1e-6)
