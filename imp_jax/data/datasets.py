"""Datasets as in-memory numpy arrays: tensorflow-datasets loading, mixtures, label noise.

Every dataset the study uses fits in memory, so it is loaded whole once and the training loop
slices device arrays. TensorFlow is only used here, to prepare a tfds dataset and read its files
once, and is kept off the GPUs; later loads read the arrays cached beside those files.
Randomness comes from one data key, split into independent streams with ``fold_in``: the noisy
labels depend on that key only, never on a model's seed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import logging
import os
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import jax
import numpy as np

from imp_jax.data import mixtures, tasks

if TYPE_CHECKING:
    import tensorflow_datasets as tfds

# Per-channel (mean, std) of each image dataset's training images scaled to [0, 1]. The
# reference code normalises MNIST with its own statistics but CIFAR-10 with ImageNet's
# (tasks.IMAGENET).
NORMALISATION = {t.name: t.stats for t in tasks.TASKS.values() if t.stats is not None}
# Which statistics ``load_dataset(normalisation=...)`` standardises the images with.
NORMALISATIONS = ("dataset", "imagenet")

# fold_in indices of the data key's independent random streams.
_STREAMS = {
    "split": 0,
    "train_noise": 1,
    "val_noise": 2,
    "test_noise": 3,
    "mixture_train": 4,
    "mixture_test": 5,
}


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


def _stream(key: jax.Array, name: str) -> jax.Array:
    return jax.random.fold_in(key, _STREAMS[name])


def _host_rng(key: jax.Array) -> np.random.Generator:
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
    rng = _host_rng(key)
    noisy = labels.copy()
    noisy[rng.permutation(len(labels))[:count]] = rng.integers(0, num_classes, count)
    return noisy, noisy != labels


def _import_tfds() -> ModuleType:
    """Imports tensorflow-datasets, which imports TensorFlow only once a dataset is prepared or
    read from its files (see :func:`_import_tensorflow`)."""
    import tensorflow_datasets as tfds

    # The bar is TensorFlow's: without TensorFlow (a run on prepared data) there is none.
    with contextlib.suppress(AttributeError, ImportError):
        tfds.disable_progress_bar()
    return tfds


def _import_tensorflow() -> None:
    """Imports TensorFlow kept off every GPU, before tensorflow-datasets first uses it.

    Raises:
      ValueError: TensorFlow is not installed (it is the ``prepare`` extra).
    """
    try:
        import tensorflow as tf
    except ImportError as e:
        raise ValueError(f"preparing a dataset, or reading one prepared without imp_jax's array "
                         f"cache, needs TensorFlow ({e}): pip install 'imp_jax[prepare]'") from e

    # TensorFlow would otherwise reserve the GPUs' memory and starve JAX. It raises if its
    # devices are already initialised in this process; then it is too late to change anything.
    with contextlib.suppress(RuntimeError):
        tf.config.set_visible_devices([], "GPU")


# One connection tried before a download, in seconds: offline, tfds' own loop retries for minutes.
_PROBE_TIMEOUT_S = 5.0


def _archives(builder: tfds.core.DatasetBuilder) -> dict[str, str]:
    """The dataset's archive file names and the URLs tfds downloads them from."""
    return {info.filename or url.rsplit("/", 1)[-1]: url
            for url, info in (builder.url_infos or {}).items()}


def archive_folders(builder: tfds.core.DatasetBuilder,
                    manual_dir: str | Path | None) -> list[Path]:
    """Where a dataset's archives are looked for, in order: ``manual_dir``, tfds' own
    ``<data_dir>/downloads/manual``, and ``../shared/data/<name>`` (from the project's root,
    where the README keeps the MNIST archives)."""
    # builder.data_dir is <data_dir>/<name>[/<config>]/<version>.
    root = Path(builder.data_dir).parents[len(Path(builder.info.full_name).parts) - 1]
    given = [Path(manual_dir)] if manual_dir is not None else []
    return [*given, root / "downloads" / "manual", Path("..", "shared", "data", builder.name)]


def _unreachable(url: str) -> str | None:
    """Why ``url`` cannot be reached within seconds (one HEAD request, through the proxy the
    environment names, as tfds' downloads go), or None when a server answers."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"),
                                    timeout=_PROBE_TIMEOUT_S):
            return None
    except urllib.error.HTTPError:  # refused, but reachable: tfds may still fetch it
        return None
    except (OSError, ValueError) as e:  # URLError, timeouts, refused connections
        return str(getattr(e, "reason", e))


def _prepare(builder: tfds.core.DatasetBuilder, manual_dir: str | Path | None) -> None:
    """Prepares ``builder``'s dataset: from its archives in the first of
    :func:`archive_folders` that holds them all (no network), else downloaded by
    tensorflow-datasets once a quick connection shows it can.

    Raises:
      ValueError: the archives are nowhere and cannot be downloaded (said within seconds,
        naming the archives and where to put them), or an archive is not the registered one.
    """
    import tensorflow_datasets as tfds  # already imported by load_tfds
    from tensorflow_datasets.core.download import download_manager

    archives = _archives(builder)
    folders = archive_folders(builder, manual_dir)
    found = next((f for f in folders if archives and all((f / a).is_file() for a in archives)),
                 None)
    where = " or ".join(str(f) for f in folders)
    if found is None and archives:
        sources = "; ".join(f"{f} from {url}" for f, url in archives.items())
        if manual_dir is not None:
            raise ValueError(
                f"dataset {builder.name!r} is not prepared in {builder.data_dir} and "
                f"{manual_dir} lacks {[f for f in archives if not (Path(manual_dir) / f).exists()]}"
                f". Download its archives ({sources}) into {where}, or leave manual_dir empty "
                "to let tensorflow-datasets download them.")
        # tfds.testing.mock_data replaces the download by a no-op: nothing to connect to then.
        downloads = type(builder).download_and_prepare.__qualname__.endswith(
            "DatasetBuilder.download_and_prepare")
        reason = _unreachable(next(iter(archives.values()))) if downloads else None
        if reason is not None:
            raise ValueError(
                f"dataset {builder.name!r} is not prepared in {builder.data_dir} and cannot be "
                f"downloaded ({reason}); put its archives {list(archives)} ({sources}) into "
                f"{where}, or name their folder with --config.data.manual_dir=DIR")
    if found is not None:
        logging.info("preparing dataset %s (first use) from the archives in %s ...",
                     builder.name, found)
    else:
        logging.info("preparing dataset %s (first use), downloading it ...", builder.name)
    start = time.perf_counter()
    _import_tensorflow()
    config = tfds.download.DownloadConfig(manual_dir=found)
    try:
        builder.download_and_prepare(download_config=config)
    except download_manager.NonMatchingChecksumError as e:
        # The message names the URL and the local file first; the sizes follow.
        detail = " ".join(str(e).split("To debug")[0].split())
        raise ValueError(
            f"an archive of {builder.name!r} does not match the checksum tensorflow-datasets "
            f"registers for it ({detail}); it is truncated or another version: download it "
            f"again from that URL") from e
    logging.info("prepared %s in %.0f s (in %s)", builder.name, time.perf_counter() - start,
                 builder.data_dir)


@contextlib.contextmanager
def _preparing(builder: tfds.core.DatasetBuilder) -> Iterator[None]:
    """Holds the exclusive lock of preparing ``builder``'s dataset in its data_dir, waiting for
    another process that holds it: tfds' preparation is not safe to run twice at once (the
    second renames its files onto the first's and fails)."""
    root = Path(builder.data_dir).parents[1]  # <data_dir>/<name>/<version>
    root.mkdir(parents=True, exist_ok=True)
    path = root / f".{builder.name}-{builder.version}.imp_jax.lock"
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logging.info("waiting for another process preparing %s in %s ...", builder.name,
                         root)
            fcntl.flock(f, fcntl.LOCK_EX)
        yield  # closing the file releases the lock


def _read_tfds(builder: tfds.core.DatasetBuilder) -> dict[str, np.ndarray]:
    """The train and test splits read from tfds' files (or its mock data), with TensorFlow."""
    import tensorflow_datasets as tfds  # already imported by load_tfds

    _import_tensorflow()
    arrays = {}
    for split in ("train", "test"):
        # Large batches, joined; as fast as batch_size=-1, which sizes its one batch by the
        # split's recorded size and so aborts the process on tfds' mock data (size unknown).
        ds = builder.as_dataset(split=split, batch_size=4096, as_supervised=True)
        images, labels = zip(*tfds.as_numpy(ds), strict=True)
        arrays[f"x_{split}"] = np.concatenate(images)
        arrays[f"y_{split}"] = np.concatenate(labels).astype(np.int32)
    return arrays


# A prepared dataset's arrays, cached beside tfds' files: reading them back takes a fraction of a
# second and no TensorFlow, where tfds' readers take seconds to parse the records and decode
# their PNG images (and TensorFlow, for tfds' default tfrecord files).
_CACHE_FILE = "imp_jax_arrays.npz"
_CACHE_ARRAYS = ("x_train", "y_train", "x_test", "y_test")


def _digest(dataset: str, arrays: dict[str, np.ndarray]) -> str:
    """sha256 of the dataset's tfds name and version, and of each array's dtype, shape and bytes."""
    h = hashlib.sha256(dataset.encode())
    for name in _CACHE_ARRAYS:
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name} {a.dtype.str} {a.shape}".encode())
        h.update(a)
    return h.hexdigest()


def _read_cache(path: Path, dataset: str) -> dict[str, np.ndarray] | None:
    """The arrays cached at ``path`` for ``dataset`` (tfds' full name, e.g. ``mnist/3.0.1``), or
    None when there is no cache there or it does not verify."""
    try:
        with np.load(path) as npz:
            arrays = {name: npz[name] for name in _CACHE_ARRAYS}
            recorded = str(npz["sha256"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        logging.warning("ignoring the unreadable array cache %s (%s)", path, e)
        return None
    if recorded != _digest(dataset, arrays):
        logging.warning("ignoring the array cache %s: its checksum does not match (altered, or "
                        "not %s's)", path, dataset)
        return None
    return arrays


def _write_cache(path: Path, dataset: str, arrays: dict[str, np.ndarray]) -> None:
    """Caches ``arrays`` at ``path``, atomically: concurrent loads find no cache or a whole one.

    A folder that cannot be written keeps no cache: later loads read tfds' files again.
    """
    # A name of its own per writer (processes on several hosts may share the data_dir).
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "xb") as f:
            np.savez(f, sha256=np.array(_digest(dataset, arrays)), **arrays)
        os.replace(tmp, path)
    except OSError as e:
        logging.warning("could not cache %s's arrays at %s (%s); later loads read tfds' files "
                        "again, with TensorFlow", dataset, path, e)
    finally:
        tmp.unlink(missing_ok=True)


def load_tfds(
    name: str, *, data_dir: str | Path | None = None, manual_dir: str | Path | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Loads a tfds image-classification dataset whole: raw uint8 images (N, H, W, C), int32 labels.

    Returns ``(x_train, y_train, x_test, y_test, num_classes)``. A dataset not yet prepared in
    ``data_dir`` (tfds' default when None) is prepared from the original archives, found in
    ``manual_dir`` or the other :func:`archive_folders`, or downloaded; ValueError within
    seconds when they are nowhere and cannot be downloaded.

    Preparing a dataset, and reading tfds' files, import TensorFlow; the arrays read are then
    cached beside tfds' files (``imp_jax_arrays.npz`` with a checksum), and later loads read
    that cache without importing TensorFlow. A cache that is missing (a dataset prepared before
    caching) or does not verify is ignored and written anew from tfds' files.
    """
    tfds = _import_tfds()
    builder = tfds.builder(name, data_dir=data_dir)
    cache = Path(builder.data_dir) / _CACHE_FILE
    arrays = _read_cache(cache, builder.info.full_name) if builder.is_prepared() else None
    if arrays is None:
        if not builder.is_prepared():
            with _preparing(builder):
                # Another process may have prepared it while this one waited for the lock.
                builder = tfds.builder(name, data_dir=data_dir)
                if not builder.is_prepared():
                    _prepare(builder, manual_dir)
        arrays = _read_tfds(builder)
        # tfds' mock data (tfds.testing.mock_data) is never prepared, so never cached.
        if builder.is_prepared():
            _write_cache(cache, builder.info.full_name, arrays)
    label_key = builder.info.supervised_keys[1]
    num_classes = builder.info.features[label_key].num_classes
    return arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"], num_classes


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
    order = _host_rng(key).permutation(n)
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
        ``mnist``, ``fashion_mnist``, ``cifar10``, ``cifar100`` (via tfds; see :func:`load_tfds` for
        ``data_dir`` and ``manual_dir``), ``mixture_linear`` or ``mixture_xor`` (see
        :mod:`imp_jax.data.mixtures`).
      key: the data key; the subset, validation split, noisy labels and mixture samples all
        derive from it alone.
      label_noise: fraction of training (and validation) labels replaced by uniform random ones,
        see :func:`add_label_noise`; the test labels stay clean, ``y_test_noisy`` gets the same.
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
        (``"dataset"``, :data:`NORMALISATION`) or with ImageNet's (``"imagenet"``, RGB datasets
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
        _stream(key, "split"), len(y_train), train_subset, validation_size, name
    )
    x_val, y_val = x_train[val], y_train[val]
    x_train, y_train = x_train[train], y_train[train]
    if stats is not None and not keep_uint8:  # after subsetting: only kept ones converted
        x_train, x_val, x_test = (
            normalise_images(x, *stats) for x in (x_train, x_val, x_test)
        )

    noisy_train, corrupted = add_label_noise(
        _stream(key, "train_noise"), y_train, label_noise, num_classes
    )
    noisy_test, _ = add_label_noise(_stream(key, "test_noise"), y_test, label_noise, num_classes)
    if validation_size:
        y_val, _ = add_label_noise(_stream(key, "val_noise"), y_val, label_noise, num_classes)
    return Dataset(x_train, noisy_train, y_train, corrupted, x_test, y_test, noisy_test,
                   num_classes, name, x_val=x_val if validation_size else None,
                   y_val=y_val if validation_size else None,
                   normalisation=stats if keep_uint8 else None)


def _sample_mixture(task: tasks.Task, key: jax.Array, nu: float, dim: int, n_train: int,
                    n_test: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """A mixture task's training and test points, each set from a stream of its own."""
    x_train, y_train = task.sample(_stream(key, "mixture_train"), nu, n_train, dim)
    x_test, y_test = task.sample(_stream(key, "mixture_test"), nu, n_test, dim)
    return x_train, y_train, x_test, y_test, mixtures.NUM_CLASSES
