"""Datasets through tensorflow-datasets: prepared once from the original archives (under a lock
that several processes share), read whole, and cached as arrays.

TensorFlow is only used here, to prepare a tfds dataset and read its files once, and is kept off
the GPUs; later loads read the arrays cached beside those files, without TensorFlow.
"""

from __future__ import annotations

import contextlib
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

import numpy as np

if TYPE_CHECKING:
    import tensorflow_datasets as tfds


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
