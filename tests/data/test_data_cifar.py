"""Tests for CIFAR in imp_jax.data.datasets, class subsets and raw uint8 images, on tfds' mock
data."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from imp_jax.core import augment
from imp_jax.data import datasets, preparation, tasks

KEY = jax.random.key(0)
CIFAR10 = tasks.get("cifar10").stats

pytestmark = pytest.mark.slow  # tfds' mock CIFAR-10 takes about 20 s to serve


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """CIFAR is not on disk: tfds' mock serves the same random examples to every load."""
    import tensorflow_datasets as tfds

    data_dir = tmp_path_factory.mktemp("tfds")
    with tfds.testing.mock_data(num_examples=500):
        out = {
            "raw": preparation.load_tfds("cifar10", data_dir=data_dir),
            "default": datasets.load_dataset("cifar10", key=KEY, data_dir=data_dir),
            "uint8": datasets.load_dataset("cifar10", key=KEY, data_dir=data_dir, keep_uint8=True),
            "five": datasets.load_dataset("cifar10", key=KEY, data_dir=data_dir, classes=5,
                                      keep_uint8=True, label_noise=0.5, validation_size=20),
            "cifar100": datasets.load_dataset("cifar100", key=KEY, data_dir=data_dir, classes=7,
                                          label_noise=0.2),
            "mnist": datasets.load_dataset("mnist", key=KEY, data_dir=data_dir, classes=3,
                                       label_noise=0.5),
        }
        for classes in (1, 11, -1):
            with pytest.raises(ValueError, match=r"classes must be 0 \(all\) or in \[2, 10\]"):
                datasets.load_dataset("cifar10", key=KEY, data_dir=data_dir, classes=classes)
    return out


def test_cifar10_default_is_normalised_float32(loaded):
    x_train, y_train, x_test, _, k = loaded["raw"]
    ds = loaded["default"]
    assert k == 10 and ds.num_classes == 10 and ds.name == "cifar10"
    assert x_train.shape == (500, 32, 32, 3) and x_train.dtype == np.uint8
    assert ds.input_shape == (32, 32, 3) and ds.x_train.dtype == ds.x_test.dtype == np.float32
    assert ds.normalisation is None
    np.testing.assert_array_equal(ds.y_train_clean, y_train)
    np.testing.assert_allclose(ds.x_test, datasets.normalise_images(x_test, *CIFAR10))


def test_keep_uint8_records_the_normalisation(loaded):
    x_train, _, x_test, _, _ = loaded["raw"]
    ds = loaded["uint8"]
    assert ds.x_train.dtype == ds.x_test.dtype == np.uint8
    np.testing.assert_array_equal(ds.x_train, x_train)
    np.testing.assert_array_equal(ds.x_test, x_test)
    assert ds.normalisation == CIFAR10 == (
        (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
    # Normalising on the device gives what the default load gives.
    np.testing.assert_allclose(augment.normalise(ds.x_test, *ds.normalisation),
                               loaded["default"].x_test, rtol=1e-6, atol=1e-6)


def test_class_subset_keeps_the_first_classes_in_order(loaded):
    x_train, y_train, x_test, y_test, _ = loaded["raw"]
    ds = loaded["five"]
    assert ds.num_classes == 5 and ds.x_train.dtype == np.uint8
    np.testing.assert_array_equal(ds.x_test, x_test[y_test < 5])
    np.testing.assert_array_equal(ds.y_test, y_test[y_test < 5])
    # Training and validation examples together are exactly the subset's training examples.
    kept = y_train < 5
    assert ds.n_train + len(ds.y_val) == kept.sum() and len(ds.y_val) == 20
    label_of = {x.tobytes(): y for x, y in zip(x_train[kept], y_train[kept], strict=True)}
    assert {x.tobytes() for x in (*ds.x_train, *ds.x_val)} == set(label_of)
    assert [label_of[x.tobytes()] for x in ds.x_train] == list(ds.y_train_clean)
    for labels in (ds.y_train, ds.y_train_clean, ds.y_test, ds.y_test_noisy, ds.y_val):
        np.testing.assert_array_equal(np.unique(labels), np.arange(5))


def test_label_noise_stays_within_the_subsets_classes(loaded):
    ds = loaded["five"]
    # Half of the ~230 training examples relabelled uniformly over 5 classes: 4/5 of them change.
    relabelled = round(0.5 * ds.n_train)
    assert abs(ds.corrupted.sum() - 0.8 * relabelled) < 5 * np.sqrt(0.16 * relabelled)
    np.testing.assert_array_equal(ds.corrupted, ds.y_train != ds.y_train_clean)
    assert ds.y_train.max() < 5 and ds.y_test_noisy.max() < 5 and ds.y_val.max() < 5


def test_cifar100_and_mnist_subsets(loaded):
    c100, mnist = loaded["cifar100"], loaded["mnist"]
    assert c100.num_classes == 7 and c100.input_shape == (32, 32, 3)
    assert c100.x_train.dtype == np.float32 and c100.y_train.max() < 7
    assert mnist.num_classes == 3 and mnist.input_shape == (28, 28, 1)
    assert set(np.unique(mnist.y_train)) <= {0, 1, 2} and mnist.corrupted.any()


def test_mixtures_have_two_classes_and_no_raw_images():
    settings = {"key": KEY, "mixture_nu": 1.0, "mixture_dim": 4, "mixture_train": 100,
                "mixture_test": 50}
    default = datasets.load_dataset("mixture_linear", **settings)
    both = datasets.load_dataset("mixture_linear", classes=2, **settings)
    np.testing.assert_array_equal(both.x_train, default.x_train)
    with pytest.raises(ValueError, match=r"in \[2, 2\]"):
        datasets.load_dataset("mixture_linear", classes=3, **settings)
    with pytest.raises(ValueError, match="keep_uint8 applies to image datasets only"):
        datasets.load_dataset("mixture_linear", keep_uint8=True, **settings)
