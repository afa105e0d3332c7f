"""Every metrics row recomputed independently, for a small MNIST run and a small mixture run.

Each row's measurements are recomputed from the level's saved params and masks and the dataset
loaded afresh from the run's config: the network's forward pass in float64 numpy, the errors,
NLL and Brier score in numpy, the binned calibration errors with :mod:`imp_jax.core.metrics`; the
mixture's fresh points and their exact p(y|x) are drawn here. Nothing goes through the run's
evaluation path (:mod:`imp_jax.run.evaluation`).
"""

from __future__ import annotations

import numpy as np
import pytest

from configs import mixture_linear, mnist_noise
from imp_jax.core import parallel
from imp_jax.data import mixtures, tasks
from imp_jax.run import experiment
from tests import saved_runs
from tests.saved_runs import SavedRun

pytestmark = pytest.mark.slow  # IMP runs, made by the module's fixtures

# The mixture run first: the MNIST one prepares MNIST (slow).
RUNS = ["mixture", pytest.param("mnist", marks=pytest.mark.slow)]


@pytest.fixture(scope="module")
def mnist_run(mnist_tfds, tmp_path_factory: pytest.TempPathFactory) -> SavedRun:
    """The MNIST smoke config at 1 000 examples (200 held out for validation), 784-32-10,
    2 replicates, 3 levels of 2 epochs: the reference code's count, the output layer dense."""
    c = mnist_noise.get_config("smoke")
    c.data.data_dir, c.data.manual_dir = str(mnist_tfds["data_dir"]), str(mnist_tfds["manual_dir"])
    c.data.train_subset, c.data.validation_size = 1000, 200
    c.model.hidden = (32,)
    c.imp.levels = 2
    return saved_runs.run_in_process(c, tmp_path_factory.mktemp("mnist_rows"))


@pytest.fixture(scope="module")
def mixture_run(tiny_finished_run) -> SavedRun:
    """The session's tiny linear-mixture run (2 replicates, 4 levels, 5% label noise)."""
    return saved_runs.load(tiny_finished_run)


@pytest.mark.slow
@pytest.mark.parametrize("which", RUNS)
def test_every_row_recomputed_from_the_saved_state(which, request):
    run: SavedRun = request.getfixturevalue(f"{which}_run")
    c = run.config
    ds = saved_runs.dataset(c)
    sample = saved_runs.fresh(c) if which == "mixture" else None
    # One noisy label vector: every replicate trains on it (the rows below, recomputed with it
    # at every level, show it never changed between levels).
    for labels in np.asarray(run.exp.y_train):
        np.testing.assert_array_equal(labels, ds.y_train)
    assert len(run.rows) == len(run.levels) * c.replicates
    for row in run.rows:
        level, r = row["level"], row["replicate"]
        got = saved_runs.recompute_row(c, ds, sample,
                                       saved_runs.replicate(run.levels[level].params, r),
                                       saved_runs.replicate(run.levels[level].masks, r))
        measured = {k for k in row if not k.startswith("time_")} - set(saved_runs.BOOKKEEPING)
        assert set(got) == measured, "a metric of the row is not recomputed here, or missing"
        for name, value in got.items():
            n = saved_runs.set_size(name, ds, sample)
            assert row[name] == pytest.approx(value, abs=saved_runs.tolerance(name, n)), (
                f"level {level} replicate {r}: {name}")
        assert row["epochs"] == c.train.epochs


@pytest.mark.parametrize("which", RUNS)
def test_noisy_test_labels_differ_and_so_do_their_metrics(which, request):
    run: SavedRun = request.getfixturevalue(f"{which}_run")
    c = run.config
    ds = saved_runs.dataset(c)
    k = ds.num_classes
    # A replaced label is uniform over the classes, so 1/k of the replaced keep their value.
    changed = np.mean(ds.y_test_noisy != ds.y_test)
    assert changed == pytest.approx(c.data.label_noise * (1 - 1 / k), abs=0.01)
    assert np.mean(ds.corrupted) == pytest.approx(c.data.label_noise * (1 - 1 / k), abs=0.02)
    np.testing.assert_array_equal(ds.corrupted, ds.y_train != ds.y_train_clean)
    for row in run.rows:
        for m in ("nll", "brier"):
            # Labels differ on `changed` of the examples: every example's loss sees it (the
            # error may not, where changes toward and away from the prediction cancel).
            assert abs(row[f"test_noisy_{m}"] - row[f"test_{m}"]) > 1e-3, (row["level"], m)


def test_fresh_sample_has_the_clean_p_true_and_its_noisy_version():
    c = fresh_config()
    task = tasks.get(c.data.name)
    got = experiment.fresh_sample(c, task, parallel.Layout.create("batch"))
    want = saved_runs.fresh(c)
    np.testing.assert_array_equal(np.asarray(got.x), want.x)
    np.testing.assert_array_equal(np.asarray(got.labels), want.labels)
    p_true = np.asarray(got.p_true, np.float64)
    np.testing.assert_allclose(p_true, np.asarray(mixtures.true_probs(
        task.mixture, c.data.mixture_nu, want.x, 0.0)), atol=1e-6)
    np.testing.assert_allclose(p_true, want.p_true, atol=1e-6)
    eta = c.data.label_noise
    np.testing.assert_allclose(np.asarray(got.p_true_noisy), (1 - eta) * p_true + eta / 2,
                               atol=1e-6)
    # The noise pulls every probability towards 1/2 by eta |p - 1/2|.
    assert np.min(np.abs(p_true - 0.5)) >= np.min(np.abs(np.asarray(got.p_true_noisy) - 0.5))
    assert np.max(np.abs(p_true - np.asarray(got.p_true_noisy))) > 0.5 * eta * 0.5
    # The labels are drawn from the clean p(y|x): their mean is its mean, within sampling error.
    assert np.mean(want.labels) == pytest.approx(np.mean(p_true[:, 1]), abs=0.03)


def fresh_config():
    """A small linear-mixture config with 10% label noise and 2 000 fresh points."""
    c = mixture_linear.get_config("smoke")
    c.data.mixture_dim, c.data.label_noise, c.eval.fresh_points = 10, 0.1, 2000
    return c


@pytest.mark.slow
def test_an_export_takes_the_raw_pixels_and_gives_the_rows_error(mnist_run, mnist_tfds):
    """``export.load(path).predict`` on MNIST as the dataset gives it (uint8 pixels) has the
    run's recorded test error; standardised inputs are refused rather than standardised
    twice."""
    from imp_jax import export
    from imp_jax.data import preparation

    _, _, x_test, y_test, _ = preparation.load_tfds("mnist", **mnist_tfds)
    exported = export.export_run(mnist_run.workdir, "compact", level=2, replicate=1)
    errors = np.mean(np.argmax(np.asarray(exported.predict(x_test)), -1) != y_test)
    assert errors == pytest.approx(mnist_run.row(2, 1)["test_error"], abs=1e-4)
    with pytest.raises(ValueError, match="raw uint8 pixels"):
        exported.predict(x_test.astype(np.float32) / 255)
