"""Compact and BCOO exports predict what the masked model predicts, and read back alone."""

from __future__ import annotations

import functools
import shutil

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imp_jax import export, masks
from imp_jax.core import models
from imp_jax.run.rundir import RunDir
from tests.helpers import run_cli

# (model, input shape) of the three architectures an export covers; small shapes.
MODELS = {
    "fcn": (models.make_model("fcn", 10, hidden=(64,)), (6, 8, 8, 1)),
    "fcn3": (models.make_model("fcn", 10, hidden=(32, 16)), (6, 8, 8, 1)),
    "resnet": (models.make_model("resnet", 5, width=4, blocks_per_stage=1), (6, 8, 8, 3)),
}


@functools.cache  # one set of weights per model for the whole module
def _variables(name: str, seed: int = 0):
    model, shape = MODELS[name]
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    variables = jax.jit(model.init)(jax.random.key(seed), x)

    def shifted(tree, scale):
        return jax.tree_util.tree_map(
            lambda a: a + scale * rng.normal(size=a.shape).astype(np.float32), tree)

    params = variables["params"]
    if name != "resnet":  # non-zero biases, so folding a dropped unit's constant matters
        params = {n: {**layer, "bias": shifted(layer["bias"], 0.5)}
                  for n, layer in params.items()}
    else:  # BN parameters and running statistics away from their initial 0 and 1
        params = shifted(params, 0.3)
        variables = {**variables, "batch_stats": jax.tree_util.tree_map(
            np.abs, shifted(variables["batch_stats"], 0.3))}
    return model, x, params, {k: v for k, v in variables.items() if k != "params"}


def _random_mask(params, kept: float, seed: int = 5):
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(  # kernels only, as IMP prunes them
        lambda a: jnp.asarray(rng.random(a.shape) < kept if a.ndim >= 2 else np.ones(a.shape,
                                                                                   bool)), params)


def _masked_logits(model, x, params, mask, state):
    return _apply(model)({"params": masks.apply_mask(params, mask), **state}, x)


@functools.cache  # compiled once per model: op by op, a ResNet's apply takes seconds
def _apply(model):
    return jax.jit(model.apply)


def _imp_mask(params, levels: int, fraction: float = 0.4):
    mask = masks.ones_like(params)
    for _ in range(levels):
        mask = masks.prune_global(params, mask, fraction)
    return mask


@pytest.mark.slow
@pytest.mark.parametrize("fmt", export.FORMATS)
@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("kind", ["random", "magnitude"])
def test_export_predicts_as_the_masked_model(name, fmt, kind):
    model, x, params, state = _variables(name)
    # "magnitude": the masks IMP makes, global magnitude pruning level after level (95% pruned).
    mask = _random_mask(params, kept=0.1) if kind == "random" else _imp_mask(params, levels=6)
    net = export.EXPORTERS[fmt](params, mask, state)
    # Folded biases and BatchNorm reorder float32 sums: logits of size 30 agree to 1e-5 relative.
    chex.assert_trees_all_close(net.predict(x), _masked_logits(model, x, params, mask, state),
                                atol=1e-4, rtol=1e-5)
    assert net.meta["weights"]["kept"] == export.weight_counts(mask)["kept"]
    if fmt == "bcoo":  # only the kept kernel weights are stored
        assert net.meta["weights"]["stored"] == net.meta["weights"]["kept"]
    else:
        assert net.meta["weights"]["stored"] <= net.meta["weights"]["total"]


def test_a_unit_without_kept_inputs_is_folded_into_the_next_bias():
    model, x, params, state = _variables("fcn")
    mask = masks.ones_like(params)
    hidden = np.asarray(mask["hidden_0"]["kernel"]).copy()
    hidden[:, :3] = False  # units 0-2 take no input: they output relu(bias), a constant
    mask = {**mask, "hidden_0": {**mask["hidden_0"], "kernel": jnp.asarray(hidden)}}
    params = {**params, "hidden_0": {**params["hidden_0"],
                                      "bias": params["hidden_0"]["bias"].at[:3].set(0.8)}}
    net = export.compact(params, mask, state)
    assert net.shape == "64-61-10"
    # Folded biases and BatchNorm reorder float32 sums: logits of size 30 agree to 1e-5 relative.
    chex.assert_trees_all_close(net.predict(x), _masked_logits(model, x, params, mask, state),
                                atol=1e-4, rtol=1e-5)
    # Their constant went into the output bias; dropping them unfolded would change the logits.
    folded = params["output"]["bias"] + 0.8 * params["output"]["kernel"][:3].sum(0)
    chex.assert_trees_all_close(net.arrays["output/bias"], folded, atol=1e-6)


def test_a_unit_that_reaches_nothing_is_dropped():
    _, _, params, state = _variables("fcn3")
    mask = masks.ones_like(params)
    second = np.asarray(mask["hidden_1"]["kernel"]).copy()
    second[:5] = False  # units 0-4 of the first hidden layer feed nothing
    mask = {**mask, "hidden_1": {**mask["hidden_1"], "kernel": jnp.asarray(second)}}
    assert export.compact(params, mask, state).shape == "64-27-16-10"


@pytest.mark.slow
def test_resnet_drops_dead_inner_channels_and_keeps_the_residual_stream():
    model, x, params, state = _variables("resnet")
    mask = masks.ones_like(params)
    block = "stage_1_block_0"
    k1 = np.asarray(mask[block]["conv_1"]["kernel"]).copy()
    k1[:, :, :3, :] = False  # inner channels 0-2 reach nothing
    mask = {**mask, block: {**mask[block], "conv_1": {"kernel": jnp.asarray(k1)}}}
    net = export.compact(params, mask, state)
    assert net.shape == "3-4-4:4-5:8-16:16-5"
    # Folded biases and BatchNorm reorder float32 sums: logits of size 30 agree to 1e-5 relative.
    chex.assert_trees_all_close(net.predict(x), _masked_logits(model, x, params, mask, state),
                                atol=1e-4, rtol=1e-5)


def test_other_models_are_refused_with_a_reason():
    model = models.make_model("vgg16", 10, width=4)
    params = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))["params"]
    with pytest.raises(export.ExportError, match="only the FCN and ResNet"):
        export.compact(params, masks.ones_like(params))


def _run_model(run_dir):
    config = RunDir(run_dir).stored_config()
    return models.make_model(num_classes=2, **config.model)


@pytest.mark.parametrize("fmt", export.FORMATS)
def test_a_run_level_exports_and_reloads_without_the_run_directory(tiny_finished_run, tmp_path,
                                                                  fmt):
    run = tmp_path / "run"
    shutil.copytree(tiny_finished_run, run)
    level = RunDir(run).read_rows()[-1]["level"]
    sources = export.read_level(run, level, replicate=None)
    assert len(sources) == 2
    source = sources[1]
    net = export.export_run(run, fmt, level, replicate=1)
    assert net.meta["source"] == {"run": str(run.resolve()), "level": level, "replicate": 1}
    path = export.save(net, tmp_path / "out")
    shutil.rmtree(run)
    loaded = export.load(path)
    assert loaded.meta == net.meta
    dim = source.params["hidden_0"]["kernel"].shape[0]
    x = jax.random.normal(jax.random.key(0), (16, dim))
    expected = _masked_logits(_run_model(tiny_finished_run), x, source.params, source.masks,
                              source.model_state)
    chex.assert_trees_all_close(loaded.predict(x), expected, atol=1e-5)


def test_bad_requests_say_what_is_wrong(tiny_finished_run, tmp_path):
    with pytest.raises(export.ExportError, match=r"--level: .* no finished level 99"):
        export.export_run(tiny_finished_run, "compact", 99)
    with pytest.raises(export.ExportError, match=r"--replicate: .* replicates 0\.\.1, got 2"):
        export.export_run(tiny_finished_run, "compact", 0, replicate=2)
    with pytest.raises(export.ExportError, match="--format"):
        export.export_run(tiny_finished_run, "csr", 0)
    with pytest.raises(export.ExportError, match="not an imp_jax run directory"):
        export.export_run(tmp_path, "compact", 0)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(export.ExportError, match="not a readable export"):
        export.load(tmp_path / "junk.npz")
    # An export of the same format written after the check (by another command) is kept.
    net = export.export_run(tiny_finished_run, "compact", 0)
    export.check_out(tmp_path / "out", "compact")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "compact.npz").write_bytes(b"another export")
    with pytest.raises(export.ExportError, match=r"compact\.npz exists \(an earlier export\)"):
        export.save(net, tmp_path / "out", overwrite=False)
    assert (tmp_path / "out" / "compact.npz").read_bytes() == b"another export"


def test_command_line_exports_or_says_one_line(tiny_finished_run, tmp_path):
    out = run_cli(tiny_finished_run, "--level=1", "--format=compact", f"--out={tmp_path}",
                  module="experiments.export")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "exported level 1 replicate 0 as compact: shape=10-" in out.stdout
    assert export.load(tmp_path / "compact.npz").meta["source"]["level"] == 1
    bad = run_cli(tiny_finished_run, "--level=nine", f"--out={tmp_path}",
                  module="experiments.export")
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr
    assert [line for line in bad.stderr.splitlines() if line.startswith("error:")] == [
        "error: --level: expected 'best' or a level number, got 'nine'"]
