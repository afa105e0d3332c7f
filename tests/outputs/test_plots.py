"""imp_jax.plots.run: every figure function on small synthetic arrays."""

import jax
import numpy as np
import pytest

from imp_jax.data import mixtures
from imp_jax.plots import run as run_plots
from tests.helpers import SDD, make_rows


def assert_written(paths, tmp_path, name):
    assert [p.name for p in paths] == [f"{name}.png", f"{name}.pdf"]
    for path in paths:
        assert path.parent == tmp_path and path.stat().st_size > 1000
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths[1].read_bytes()[:5] == b"%PDF-"


def test_sdd_and_ece_curves(tmp_path):
    rows = make_rows([[e, e + 0.01] for e in SDD])
    assert_written(run_plots.sdd_curve(rows, tmp_path), tmp_path, "sdd_curve")
    assert_written(run_plots.ece_curve(rows, tmp_path, best=0, name="ece"), tmp_path, "ece")


def test_curves_of_a_single_level_and_a_wide_weight_range(tmp_path):
    assert_written(run_plots.sdd_curve(make_rows([0.2]), tmp_path), tmp_path, "sdd_curve")
    rows = make_rows([0.2] * 40, weights=10**7)  # 4 decades: one tick per decade
    assert_written(run_plots.sdd_curve(rows, tmp_path, name="wide"), tmp_path, "wide")


@pytest.mark.slow
def test_calibration(tmp_path):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 300, 3)) * 3
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    labels = rng.integers(0, 3, 300)
    noisy = np.where(rng.random(300) < 0.2, rng.integers(0, 3, 300), labels)
    paths = run_plots.calibration({"dense": probs, "pruned": probs[0]}, labels, tmp_path,
                              noisy_labels=noisy, num_bins=10)
    assert_written(paths, tmp_path, "calibration")
    only_clean = run_plots.calibration({"one model": probs}, labels, tmp_path, name="clean")
    assert_written(only_clean, tmp_path, "clean")


@pytest.mark.parametrize("task", ["linear", "xor"])
def test_profile_line_passes_through_the_centres(task):
    t, x, ticks = run_plots.profile_line(task, 0.8, 6, num=61)
    assert x.shape == (61, 6) and x.dtype == np.float32 and t.shape == (61,)
    centres = mixtures.centres(task, 0.8, 6)
    for position in ticks:
        (i,) = np.flatnonzero(np.isclose(t, position))
        assert any(np.allclose(x[i], c) for c in centres.reshape(-1, 6))
    p0 = np.asarray(mixtures.true_probs(task, 0.8, x))[:, 0]
    expected = [1, 0] if task == "linear" else [1, 0, 1, 0, 1]  # class of each centre in turn
    assert [round(p0[np.flatnonzero(np.isclose(t, s))[0]]) for s in ticks] == expected


@pytest.mark.slow
def test_mixture_figures(tmp_path):
    t, x, ticks = run_plots.profile_line("xor", 1.0, 4, num=50)
    p_true = np.asarray(mixtures.true_probs("xor", 1.0, x))[:, 0]
    models = {"dense": np.clip(p_true + 0.1, 0, 1)[None].repeat(3, 0), "best": p_true * 0.9}
    paths = run_plots.mixture_profile(t, models, p_true, tmp_path, p_true_noisy=0.9 * p_true + 0.05,
                                  ticks=ticks)
    assert_written(paths, tmp_path, "mixture_profile")
    # A bias-free network's profile says why it passes 0.5 at the origin.
    captioned = run_plots.mixture_profile(t, models, p_true, tmp_path / "captioned",
                                      p_true_noisy=0.9 * p_true + 0.05, ticks=ticks,
                                      caption=run_plots.NO_BIAS_CAPTION)
    assert captioned[0].read_bytes() != paths[0].read_bytes()

    rng = np.random.default_rng(0)
    x, _ = mixtures.sample(jax.random.key(0), "linear", 1.0, 500, 8)
    p_true = np.asarray(mixtures.true_probs("linear", 1.0, x))[:, 0]
    p_model = {"dense": np.clip(p_true + rng.normal(0, 0.1, (2, 500)), 0, 1),
               "best": p_true}
    paths = run_plots.mixture_vs_true(p_true, p_model, tmp_path, label_noise=0.1, num_bins=10)
    assert_written(paths, tmp_path, "mixture_vs_true")

    mean, basis = run_plots.pca_basis(x)
    np.testing.assert_allclose(basis @ basis.T, np.eye(2), atol=1e-6)
    assert basis[0] @ np.ones(8) / np.sqrt(8) > 0.9  # PC 1: the direction joining the means
    xy = (x - mean) @ basis.T
    errors = {k: np.abs(p - p_true).reshape(-1, 500).mean(0) for k, p in p_model.items()}
    centres = (mixtures.centres("linear", 1.0, 8).reshape(-1, 8) - mean) @ basis.T
    paths = run_plots.mixture_error_map(xy, errors, tmp_path, centres_xy=centres, gridsize=10)
    assert_written(paths, tmp_path, "mixture_error_map")

