"""Prepared tfds datasets are read from their cached arrays: runs import no TensorFlow."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from imp_jax.data import preparation
from tests.helpers import MNIST_ARCHIVES, ROOT

# First on PYTHONPATH, this makes TensorFlow look uninstalled: importing it fails, and
# importlib.util.find_spec (how tensorflow-datasets and etils look for it) finds nothing.
HIDE_TENSORFLOW = """
import sys
from importlib.machinery import PathFinder


class _WithoutTensorFlow(PathFinder):
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name.partition(".")[0] == "tensorflow":
            return None
        return super().find_spec(name, path, target)


sys.meta_path[:] = [_WithoutTensorFlow if f is PathFinder else f for f in sys.meta_path]
"""
TOY = {
    "x_train": np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4, 1),
    "y_train": np.array([1, 2], np.int32),
    "x_test": np.full((1, 3, 4, 1), 7, np.uint8),
    "y_test": np.array([0], np.int32),
}


def files(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder``: its size and modification time."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file()}


def test_mnist_run_without_tensorflow(mnist_tfds, tmp_path):
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(HIDE_TENSORFLOW)
    env = {**os.environ, "PYTHONPATH": f"{hide}{os.pathsep}{ROOT}", "JAX_PLATFORMS": "cpu"}
    blocked = subprocess.run([sys.executable, "-c", "import tensorflow"], env=env,
                             capture_output=True, text=True)
    assert "ModuleNotFoundError: No module named 'tensorflow'" in blocked.stderr
    before = files(mnist_tfds["data_dir"])
    workdir = tmp_path / "run"
    out = subprocess.run(
        [sys.executable, "-m", "experiments.run", "--config=configs/mnist_noise.py:smoke",
         "--config.replicates=1", "--config.imp.levels=1", "--config.train.epochs=1",
         "--config.data.train_subset=500", f"--workdir={workdir}",
         f"--config.data.manual_dir={mnist_tfds['manual_dir']}",
         f"--config.data.data_dir={mnist_tfds['data_dir']}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads((workdir / "summary.json").read_text())["finished"]
    assert files(mnist_tfds["data_dir"]) == before, "reading a prepared dataset writes nothing"


def test_dataset_prepared_before_caching_is_cached_on_first_load(mnist_tfds, tmp_path):
    (version,) = Path(mnist_tfds["data_dir"]).glob("mnist/*")
    shutil.copytree(version, tmp_path / "mnist" / version.name)
    cache = tmp_path / "mnist" / version.name / "imp_jax_arrays.npz"
    cache.unlink()  # as tfds prepared it, without this project's cache
    old = preparation.load_tfds("mnist", data_dir=tmp_path)  # reads tfds' files, with TensorFlow
    written = files(tmp_path)
    assert cache.is_file()
    new = preparation.load_tfds("mnist", data_dir=tmp_path)
    assert files(tmp_path) == written
    assert old[4] == new[4] == 10
    for a, b in zip(old[:4], new[:4], strict=True):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype
    assert new[0].shape == (60_000, 28, 28, 1) and new[3].shape == (10_000,)


def test_cache_round_trip(tmp_path):
    preparation._write_cache(tmp_path / "c.npz", "toy/1.0.0", TOY)
    assert [p.name for p in tmp_path.iterdir()] == ["c.npz"]
    got = preparation._read_cache(tmp_path / "c.npz", "toy/1.0.0")
    assert got.keys() == TOY.keys()
    for name, array in TOY.items():
        np.testing.assert_array_equal(got[name], array)
        assert got[name].dtype == array.dtype
    assert preparation._read_cache(tmp_path / "absent.npz", "toy/1.0.0") is None


def altered(path: Path) -> None:
    """The arrays changed, the checksum kept."""
    with np.load(path) as npz:
        kept = dict(npz)
    kept["y_train"] = np.array([1, 3], np.int32)
    np.savez(path, **kept)


MISMATCH = "the array cache {}: its checksum does not match"
UNREADABLE = "the unreadable array cache {}"


@pytest.mark.parametrize(("corrupt", "dataset", "message"), [
    pytest.param(altered, "toy/1.0.0", MISMATCH, id="altered"),
    pytest.param(lambda path: None, "toy/2.0.0", MISMATCH, id="another-version"),
    pytest.param(lambda path: path.write_bytes(path.read_bytes()[:300]), "toy/1.0.0", UNREADABLE,
                 id="truncated"),
    pytest.param(lambda path: path.write_bytes(b"not a zip file"), "toy/1.0.0", UNREADABLE,
                 id="not-a-zip"),
    pytest.param(lambda path: zipfile.ZipFile(path, "w").close(), "toy/1.0.0", UNREADABLE,
                 id="no-arrays"),
])
def test_cache_that_does_not_verify_is_ignored(tmp_path, caplog, corrupt, dataset, message):
    path = tmp_path / "c.npz"
    preparation._write_cache(path, "toy/1.0.0", TOY)
    corrupt(path)
    with caplog.at_level(logging.WARNING):
        assert preparation._read_cache(path, dataset) is None
    assert f"ignoring {message.format(path)}" in caplog.text


def test_unwritable_cache_folder_keeps_no_cache(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        preparation._write_cache(tmp_path / "absent" / "c.npz", "toy/1.0.0", TOY)
    assert "could not cache toy/1.0.0's arrays" in caplog.text
    assert list(tmp_path.iterdir()) == []


# Loads MNIST into the data_dir argv[1] from the archives in argv[2], saying what it did.
LOAD_MNIST = """
import logging, sys
logging.basicConfig(level=logging.INFO, format="%(message)s")
from imp_jax.data import preparation
x_train, _, x_test, _, classes = preparation.load_tfds("mnist", data_dir=sys.argv[1],
                                                manual_dir=sys.argv[2])
print(len(x_train), len(x_test), classes)
"""


@pytest.mark.slow  # three processes load TensorFlow; one prepares MNIST (about 45 s)
def test_processes_preparing_one_dataset_take_turns(tmp_path):
    if not MNIST_ARCHIVES.is_dir():
        pytest.skip(f"the MNIST archives are not at {MNIST_ARCHIVES}")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", LOAD_MNIST, str(tmp_path / "tfds"),
                               str(MNIST_ARCHIVES)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    try:
        outs = [p.communicate(timeout=600) for p in procs]
    finally:
        for p in procs:
            p.kill()  # those still running after a failure
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
        assert out.split()[-3:] == ["60000", "10000", "10"]  # after tfds' own lines
    # One prepared it; the others waited for it, then read it.
    assert sum("prepared mnist in" in err for _, err in outs) == 1, [e[-2000:] for _, e in outs]
