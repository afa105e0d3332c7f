"""Fixtures shared by the test modules (others may add theirs here)."""

from __future__ import annotations

import atexit
import fcntl
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# One persistent XLA compilation cache for the session, its xdist workers and every process they
# start (set before JAX is imported, and inherited): the suite's many runs compile the same
# small programs, and a hit loads the executable XLA compiled for the first one.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _XLA_CACHE = tempfile.mkdtemp(prefix="imp_jax_tests_xla_")
    atexit.register(shutil.rmtree, _XLA_CACHE, True)
    os.environ.update(JAX_COMPILATION_CACHE_DIR=_XLA_CACHE,
                      JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                      JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")

from imp_jax.data import preparation
from tests.helpers import MNIST_ARCHIVES, ROOT, TINY_MIXTURE, run_cli


@pytest.fixture(scope="session")
def mnist_tfds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``data_dir`` and ``manual_dir`` keywords for loading the real MNIST offline.

    MNIST is prepared in the data_dir once for the whole session and all its xdist workers
    (about 30 s, with TensorFlow), so loads only read its cached arrays (without TensorFlow).
    """
    if not MNIST_ARCHIVES.is_dir():
        pytest.skip(f"the MNIST archives are not at {MNIST_ARCHIVES}")
    keywords = {"data_dir": session_dir(tmp_path_factory, "tfds"), "manual_dir": MNIST_ARCHIVES}
    with open(keywords["data_dir"].with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the first worker prepares it; the others wait
        preparation.load_tfds("mnist", **keywords)
    return keywords


def session_dir(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """A folder of the whole session: shared by its xdist workers (whose temporary folders
    have one parent per session), else the session's own."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return tmp_path_factory.mktemp(name)
    path = tmp_path_factory.getbasetemp().parent / name
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def tiny_finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny run of the mixture smoke config (4 levels, 2 replicates, a checkpoint every
    epoch), made once for the whole session through the command line in its default run
    directory (``runs/mixture_linear_smoke-<hash>`` under a fresh working directory). Tests may
    rerun it (which appends to its log) or draw its figures; a test that changes anything else
    works on a copy."""

    cwd = tmp_path_factory.mktemp("tiny_run")
    out = run_cli(f"--config={ROOT / 'configs' / 'mixture_linear.py'}:smoke", *TINY_MIXTURE,
                  cwd=cwd)
    assert out.returncode == 0, out.stderr[-3000:]
    (workdir,) = (cwd / "runs").iterdir()
    return workdir


# Fixtures that make a test slow: preparing MNIST takes about 45 s once per session (and the
# tests train on it); the tiny finished run is a command-line run in a subprocess; a module's
# ``reference`` is a whole run or sweep that others are compared with.
SLOW_FIXTURES = ("mnist_tfds", "tiny_finished_run", "reference")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks the tests that use a :data:`SLOW_FIXTURES` fixture slow."""
    for item in items:
        if set(SLOW_FIXTURES) & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)

