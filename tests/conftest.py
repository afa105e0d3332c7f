"""Fixtures shared by the test modules (others may add theirs here)."""

from __future__ import annotations

from pathlib import Path

import pytest

# The original MNIST archives, kept beside the repository (see shared/data/mnist/README.md).
MNIST_ARCHIVES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


@pytest.fixture(scope="session")
def mnist_tfds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``data_dir`` and ``manual_dir`` keywords for loading the real MNIST offline.

    The data_dir lasts the whole session, so the first load prepares it (about 15 s) and later
    loads only read it.
    """
    if not MNIST_ARCHIVES.is_dir():
        pytest.skip(f"the MNIST archives are not at {MNIST_ARCHIVES}")
    return {"data_dir": tmp_path_factory.mktemp("tfds"), "manual_dir": MNIST_ARCHIVES}
