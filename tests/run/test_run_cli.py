"""The command line, end to end: `python -m experiments.run` on the smoke configs."""

import json
import math
import shutil

import pytest

from tests.helpers import ROOT, TINY_MIXTURE, run_cli


def rows(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_mnist_smoke(mnist_tfds, tmp_path):
    workdir = tmp_path / "run"
    out = run_cli("--config=configs/mnist_noise.py:smoke", f"--workdir={workdir}",
                  f"--config.data.manual_dir={mnist_tfds['manual_dir']}",
                  f"--config.data.data_dir={mnist_tfds['data_dir']}")
    assert out.returncode == 0, out.stderr[-3000:]
    config = json.loads((workdir / "config.json").read_text())
    assert config["data"]["train_subset"] == 2000 and config["model"]["hidden"] == [300]
    got = rows(workdir)
    assert [(r["level"], r["replicate"]) for r in got] == [(lv, r) for lv in range(3)
                                                           for r in range(2)]
    # The reference count: R -> R - ceil(0.2 R) - 1 over every kernel weight, the 300*10
    # output layer (excluded from pruning) included.
    counts = [238_200]
    for _ in range(2):
        counts.append(counts[-1] - math.ceil(0.2 * counts[-1]) - 1)
    assert counts == [238_200, 190_559, 152_446]
    assert [r["remaining_weights"] for r in got[::2]] == counts
    assert [r["prunable_remaining"] for r in got[::2]] == [c - 3000 for c in counts]
    assert all(r["total_weights"] == 238_200 for r in got)
    assert all(0.0 <= r["test_error"] < 0.5 for r in got)  # it learns from 2 000 noisy labels
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == [
        "levels", "progress", "rewind"]
    assert json.loads((workdir / "summary.json").read_text())["finished"]


@pytest.mark.slow
@pytest.mark.parametrize("config", ["mixture_linear", "mixture_xor"])
def test_mixture_smoke_default_workdir_and_rerun(config, tmp_path, request):
    args = [f"--config={ROOT / 'configs' / config}.py:smoke", *TINY_MIXTURE]
    if config == "mixture_linear":  # the session's shared run is this one
        workdir = request.getfixturevalue("tiny_finished_run")
        cwd = workdir.parents[1]
    else:
        out = run_cli(*args, cwd=tmp_path)
        assert out.returncode == 0, out.stderr[-3000:]
        (workdir,), cwd = (tmp_path / "runs").iterdir(), tmp_path
    assert workdir.name.startswith(f"{config}_smoke-")
    got = rows(workdir)
    assert len(got) == 4 * 2 and all("true_abs_error" in r for r in got)
    again = run_cli(*args, cwd=cwd)
    assert again.returncode == 0 and "is finished" in again.stderr
    assert rows(workdir) == got


def test_bad_value_stops_before_any_work(tmp_path):
    out = run_cli("--config=configs/mixture_linear.py:smoke", "--config.train.lr=-1",
                  f"--workdir={tmp_path / 'run'}")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == (
        "error: config.train.lr: must be in (0.0, inf), got -1.0")
    assert not (tmp_path / "run").exists()


def test_batch_larger_than_dataset(tmp_path):
    out = run_cli("--config=configs/mixture_linear.py:smoke", *TINY_MIXTURE,
                  "--config.train.batch_size=1000", f"--workdir={tmp_path / 'run'}")
    assert out.returncode == 2
    assert "config.train.batch_size: 1000 is larger than the training set (500 examples)" \
        in out.stderr


def test_a_run_named_by_an_earlier_version_is_found_not_started_again(tiny_finished_run,
                                                                      tmp_path):
    # The directory an earlier version named the session's tiny run (another hash of the
    # same results-determining fields): the same command reports it finished, beside nothing.
    old = tmp_path / "runs" / "mixture_linear_smoke-0123456789"
    shutil.copytree(tiny_finished_run, old)
    out = run_cli(f"--config={ROOT / 'configs' / 'mixture_linear.py'}:smoke", *TINY_MIXTURE,
                  cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"the run of this config is in runs/{old.name} (named by an earlier version)" \
        in out.stderr and "is finished" in out.stderr
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [old.name]
    assert rows(old) == rows(tiny_finished_run)
