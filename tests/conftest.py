"""Fixtures shared by the test modules (others may add theirs here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from imp_jax import data

# The original MNIST archives, kept beside the repository (see shared/data/mnist/README.md).
MNIST_ARCHIVES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


@pytest.fixture(scope="session")
def mnist_tfds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``data_dir`` and ``manual_dir`` keywords for loading the real MNIST offline.

    MNIST is prepared in the data_dir once for the whole session (about 30 s, with TensorFlow),
    so loads only read its cached arrays (without TensorFlow).
    """
    if not MNIST_ARCHIVES.is_dir():
        pytest.skip(f"the MNIST archives are not at {MNIST_ARCHIVES}")
    keywords = {"data_dir": tmp_path_factory.mktemp("tfds"), "manual_dir": MNIST_ARCHIVES}
    data.load_tfds("mnist", **keywords)
    return keywords


@pytest.fixture(scope="session")
def tiny_finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny run of the mixture smoke config (4 levels, 2 replicates), made once for
    the whole session through the command line in its default run directory
    (``runs/mixture_linear_smoke-<hash>`` under a fresh working directory). Tests may rerun it
    (which appends to its log) or draw its figures; a test that changes anything else works
    on a copy."""
    from tests.test_run_cli import ROOT, TINY_MIXTURE, run_cli

    cwd = tmp_path_factory.mktemp("tiny_run")
    out = run_cli(f"--config={ROOT / 'configs' / 'mixture_linear.py'}:smoke", *TINY_MIXTURE,
                  cwd=cwd)
    assert out.returncode == 0, out.stderr[-3000:]
    (workdir,) = (cwd / "runs").iterdir()
    return workdir


def files_outside_plots(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``root`` but its ``plots/`` folders, as its bytes and mtime: a reader
    that leaves this unchanged wrote nothing but figures."""
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file() and "plots" not in p.parts}
