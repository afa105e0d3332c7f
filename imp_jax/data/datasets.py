"""Datasets as in-memory numpy arrays: a task's examples (read through
:mod:`imp_jax.data.preparation`, sampled, or the user's own), subsets, a validation split,
normalisation and noisy labels (:mod:`imp_jax.data.noise`).

Every dataset the study uses fits in memory, so it is loaded whole once and the training loop
slices device arrays.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import numpy as np

from imp_jax.data import mixtures, tasks
from imp_jax.data.noise import add_label_noise, host_rng, stream
from imp_jax.data.preparation import load_tfds

# Which statistics ``load_dataset(normalisation=...)`` standardises the images with.
NORMALISATIONS = ("dataset", "imagenet")


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A dataset in memory. Labels are int32; inputs float32 and normalised, or raw uint8 images.

    Attributes:
      x_train, y_train: training inputs and the labels training uses (noisy).
      y_train_clean: the training labels before noise.
      corrupted: bool (n_train,), True where ``y_train`` differs from ``y_train_clean``.
      x_test, y_test: test inputs and clean labels.
      y_test_noisy: the test labels noised like the training labels (for calibration).
      num_classes: number of classes.
      name: the dataset's name (a key of :data:`imp_jax.data.tasks.TASKS`).
      x_val, y_val: validation split carved from the training set, labels noised like training
        labels; None when none was requested.
      normalisation: ``(mean, std)`` per channel when the images are kept raw (uint8) and are to
        be normalised on the fly (see :mod:`imp_jax.core.augment`); None when the inputs are ready.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    y_train_clean: np.ndarray
    corrupted: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    y_test_noisy: np.ndarray
    num_classes: int
    name: str
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None
    normalisation: tuple[tuple[float, ...], tuple[float, ...]] | None = None

    @property
    def n_train(self) -> int:
        return len(self.y_train)

    @property
    def n_test(self) -> int:
        return len(self.y_test)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input, e.g. (28, 28, 1)."""
        return tuple(self.x_train.shape[1:])


def normalise_images(
    images: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]
) -> np.ndarray:
    """Scales uint8 images (..., C) to [0, 1], then standardises each channel; float32."""
    scaled = images.astype(np.float32) / 255.0
    return (scaled - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def _split_indices(
    key: jax.Array, n: int, train_subset: int, validation_size: int, name: str
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted indices of the training examples kept and of the validation examples."""
    if train_subset < 0 or validation_size < 0:
        raise ValueError(
            f"train_subset and validation_size must be >= 0, got {train_subset}, {validation_size}"
        )
    # At least one training example must remain besides the validation split.
    if validation_size + (train_subset or 1) > n:
        raise ValueError(
            f"train_subset={train_subset} with validation_size={validation_size} asks for more "
            f"than the {n} training examples of {name}"
        )
    if not train_subset and not validation_size:
        return np.arange(n), np.arange(0)
    order = host_rng(key).permutation(n)
    rest = order[validation_size:]
    train = rest[:train_subset] if train_subset else rest
    return np.sort(train), np.sort(order[:validation_size])


def _first_classes(
    x: np.ndarray, y: np.ndarray, classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """The examples whose label is below ``classes``, in their order."""
    keep = y < classes
    return x[keep], y[keep]


def load_dataset(
    task: tasks.Task | str,
    *,
    key: jax.Array,
    label_noise: float = 0.0,
    data_dir: str | Path | None = None,
    manual_dir: str | Path | None = None,
    train_subset: int = 0,
    validation_size: int = 0,
    mixture_nu: float | None = None,
    mixture_dim: int = 100,
    mixture_train: int = 10_000,
    mixture_test: int = 5_000,
    classes: int = 0,
    keep_uint8: bool = False,
    normalisation: str = "dataset",
) -> Dataset:
    """Loads the dataset of ``task`` with a fraction ``label_noise`` of noisy labels.

    Args:
      task: the :class:`imp_jax.data.tasks.Task`, or its name (:data:`imp_jax.data.tasks.TASKS`):
        ``mnist``, ``fashion_mnist``, ``cifar10``, ``cifar100`` (via tfds; see
        :func:`imp_jax.data.preparation.load_tfds` for ``data_dir`` and ``manual_dir``),
        ``mixture_linear`` or ``mixture_xor`` (see :mod:`imp_jax.data.mixtures`).
      key: the data key; the subset, validation split, noisy labels and mixture samples all
        derive from it alone.
      label_noise: fraction of training (and validation) labels replaced by uniform random ones,
        see :func:`imp_jax.data.noise.add_label_noise`; the test labels stay clean,
        ``y_test_noisy`` gets the same.
      train_subset: if > 0, keep only this many random training examples.
      validation_size: if > 0, carve this many random examples off the training set (before the
        noise, then noised like training labels) into ``x_val, y_val``.
      mixture_nu: the mixtures' mean scale (required for them); mixture_dim their dimension;
        mixture_train / mixture_test their sizes.
      classes: if > 0, keep only the examples of the first ``classes`` classes (labels
        ``0..classes-1``, so no relabelling is needed), in the training and test sets, before
        everything else; ``num_classes`` becomes ``classes`` and noisy labels stay within them.
      keep_uint8: keep the images raw (uint8) instead of normalising them, and record their
        ``(mean, std)`` in ``Dataset.normalisation`` for the training step to apply on device
        (see :mod:`imp_jax.core.augment`). Image datasets only.
      normalisation: standardise the images with the dataset's own per-channel statistics
        (``"dataset"``, ``Task.stats``) or with ImageNet's (``"imagenet"``, RGB datasets
        only), as the reference code does for CIFAR-10.
    """
    task = tasks.get(task) if isinstance(task, str) else task
    name = task.name
    if not 0.0 <= label_noise <= 1.0:
        raise ValueError(f"label_noise must be a fraction in [0, 1], got {label_noise}")
    if keep_uint8 and task.stats is None:
        raise ValueError(f"keep_uint8 applies to image datasets only, not to {name}")
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"normalisation must be one of {NORMALISATIONS}, got {normalisation!r}")
    if normalisation == "imagenet" and not task.rgb:
        raise ValueError(f"normalisation='imagenet' is for RGB datasets, not {name}")
    stats = tasks.IMAGENET if normalisation == "imagenet" else task.stats
    if task.is_mixture:
        if mixture_nu is None:
            raise ValueError(f"mixture_nu (the mean scale nu) is required for {name}")
        x_train, y_train, x_test, y_test, num_classes = _sample_mixture(
            task, key, mixture_nu, mixture_dim, mixture_train, mixture_test)
    elif task.arrays is not None:
        x_train, y_train, x_test, y_test, num_classes = task.arrays()
    else:
        x_train, y_train, x_test, y_test, num_classes = load_tfds(
            name, data_dir=data_dir, manual_dir=manual_dir
        )
    if classes:  # negative values fail the check too
        if not 2 <= classes <= num_classes:
            raise ValueError(f"classes must be 0 (all) or in [2, {num_classes}] for {name}, "
                             f"got {classes}")
        x_train, y_train = _first_classes(x_train, y_train, classes)
        x_test, y_test = _first_classes(x_test, y_test, classes)
        num_classes = classes

    train, val = _split_indices(
        stream(key, "split"), len(y_train), train_subset, validation_size, name
    )
    x_val, y_val = x_train[val], y_train[val]
    x_train, y_train = x_train[train], y_train[train]
    if stats is not None and not keep_uint8:  # after subsetting: only kept ones converted
        x_train, x_val, x_test = (
            normalise_images(x, *stats) for x in (x_train, x_val, x_test)
        )

    noisy_train, corrupted = add_label_noise(
        stream(key, "train_noise"), y_train, label_noise, num_classes
    )
    noisy_test, _ = add_label_noise(stream(key, "test_noise"), y_test, label_noise, num_classes)
    if validation_size:
        y_val, _ = add_label_noise(stream(key, "val_noise"), y_val, label_noise, num_classes)
    return Dataset(x_train, noisy_train, y_train, corrupted, x_test, y_test, noisy_test,
                   num_classes, name, x_val=x_val if validation_size else None,
                   y_val=y_val if validation_size else None,
                   normalisation=stats if keep_uint8 else None)


def _sample_mixture(task: tasks.Task, key: jax.Array, nu: float, dim: int, n_train: int,
                    n_test: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """A mixture task's training and test points, each set from a stream of its own."""
    x_train, y_train = task.sample(stream(key, "mixture_train"), nu, n_train, dim)
    x_test, y_test = task.sample(stream(key, "mixture_test"), nu, n_test, dim)
    return x_train, y_train, x_test, y_test, mixtures.NUM_CLASSES
