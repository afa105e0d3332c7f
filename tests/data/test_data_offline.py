"""A dataset that is not prepared: its archives looked for where they may be, and on a machine
without network one error line within seconds."""

from __future__ import annotations

import time

import pytest

from imp_jax.data import preparation
from tests.helpers import ROOT, run_cli

MNIST_ARCHIVES = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                  "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
# Every proxy variable at a closed local port: no connection can be made.
OFFLINE = {name: "http://127.0.0.1:9" for name in (
    "HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy", "ALL_PROXY", "all_proxy")}


def _builder(tmp_path):
    return preparation._import_tfds().builder("mnist", data_dir=tmp_path / "tfds")


def test_archives_are_looked_for_in_manual_dir_then_tfds_then_shared(tmp_path):
    folders = preparation.archive_folders(_builder(tmp_path), tmp_path / "mine")
    assert [str(f) for f in folders] == [str(tmp_path / "mine"),
                                         str(tmp_path / "tfds" / "downloads" / "manual"),
                                         "../shared/data/mnist"]
    assert preparation.archive_folders(_builder(tmp_path), None) == folders[1:]


def test_archives_in_tfds_own_manual_folder_are_used(tmp_path, monkeypatch):
    builder = _builder(tmp_path)
    manual = tmp_path / "tfds" / "downloads" / "manual"
    manual.mkdir(parents=True)
    for name in MNIST_ARCHIVES:
        (manual / name).touch()
    used = []
    monkeypatch.setattr(builder, "download_and_prepare",
                        lambda download_config: used.append(download_config.manual_dir))
    monkeypatch.chdir(tmp_path)  # no ../shared/data here
    preparation._prepare(builder, tmp_path / "empty")  # a manual_dir without them: the next folder
    assert used == [manual]


@pytest.mark.slow
def test_offline_without_archives_fails_in_seconds_with_one_line(tmp_path, monkeypatch):
    for name, value in OFFLINE.items():
        monkeypatch.setenv(name, value)
    start = time.perf_counter()
    out = run_cli(f"--config={ROOT / 'configs' / 'mnist_noise.py'}:smoke",
                  f"--config.data.data_dir={tmp_path / 'tfds'}", f"--workdir={tmp_path / 'run'}",
                  cwd=tmp_path)
    seconds = time.perf_counter() - start
    assert out.returncode == 2 and "Traceback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, out.stderr[-3000:]
    assert errors[0].startswith("error: config.data: dataset 'mnist' is not prepared in")
    assert all(name in errors[0] for name in MNIST_ARCHIVES)
    assert "--config.data.manual_dir=DIR" in errors[0]
    assert str(tmp_path / "tfds" / "downloads" / "manual") in errors[0]
    assert seconds < 30, seconds
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/archive.gz", "not a url"])
def test_an_unreachable_url_says_why(url, monkeypatch):
    for name in OFFLINE:
        monkeypatch.delenv(name, raising=False)
    assert preparation._unreachable(url)
