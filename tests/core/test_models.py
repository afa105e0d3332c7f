"""Tests for imp_jax.core.models: shapes, BatchNorm state, parameter counts and prunable leaves."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import cifar10_noise, mnist_resnet_noise
from imp_jax import masks
from imp_jax.core import models
from imp_jax.run import config as config_lib

# Threefry keys make each kernel shape's initialiser take seconds to compile on a CPU; rbg keys
# (XLA's own generator) a tenth of that, and the models accept any key.
KEY = jax.random.key(0, impl="rbg")
CIFAR = jnp.asarray(np.random.default_rng(0).normal(size=(4, 32, 32, 3)), jnp.float32)
MNIST = jnp.asarray(np.random.default_rng(1).normal(size=(4, 28, 28, 1)), jnp.float32)

# Small instances of every CNN (DenseNet with fewer layers: at full depth it is slow to compile).
SMALL = {
    "resnet": models.ResNet(10, width=2, blocks_per_stage=1),
    "vgg16": models.VGG16(10, width=2),
    "densenet": models.DenseNet(10, growth_rate=2, blocks=(1, 2)),
}


def _count(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


def _by_path(tree) -> dict[str, jax.Array]:
    return dict(zip(masks.leaf_paths(tree), jax.tree_util.tree_leaves(tree), strict=True))


@functools.partial(jax.jit, static_argnums=0)
def _probe(model: models.nn.Module, x: jax.Array) -> dict:
    """Init and every way of applying ``model``, in one compilation (compiling dominates)."""
    variables = model.init(KEY, x)
    train_logits, train_vars = model.apply(variables, x, train=True, mutable=["batch_stats"])
    eval_logits, eval_vars = model.apply(variables, x, train=False, mutable=["batch_stats"])
    return {
        "variables": variables,
        "train_logits": train_logits,
        "train_stats": train_vars["batch_stats"],
        "eval_logits": eval_logits,
        "eval_stats": eval_vars["batch_stats"],
        # The first example with the rest of the batch changed.
        "eval_first_alone": model.apply(variables, x.at[1:].set(0.0))[0],
        "train_first_alone": model.apply(variables, x.at[1:].set(0.0), train=True,
                                         mutable=["batch_stats"])[0][0],
    }


@pytest.fixture(scope="module", params=list(SMALL))
def small(request) -> tuple[models.nn.Module, dict]:
    model = SMALL[request.param]
    return model, _probe(model, CIFAR)


@pytest.mark.slow
def test_cnn_output_shapes_for_cifar_and_mnist_inputs(small):
    model, probe = small
    assert probe["train_logits"].shape == probe["eval_logits"].shape == (4, 10)
    variables = jax.eval_shape(model.init, KEY, MNIST)
    assert jax.eval_shape(model.apply, variables, MNIST).shape == (4, 10)


@pytest.mark.parametrize(
    ("name", "kwargs", "count"),
    [
        # ResNet-20 with projection shortcuts (option B) and DenseNet-121 for CIFAR-10
        # (kuangliu/pytorch-cifar): their published parameter counts.
        ("resnet", {"width": 16}, 272_474),
        ("densenet121", {}, 6_956_298),
        # VGG-16 with BN and no conv biases: 14 728 266 (OpenLTH's, with biases) - 4 224 biases.
        ("vgg16", {}, 14_724_042),
    ],
)
@pytest.mark.slow
def test_full_size_models_by_abstract_evaluation(name, kwargs, count):
    model = models.make_model(name, 10, **kwargs)
    variables = jax.eval_shape(model.init, KEY, CIFAR)
    assert _count(variables["params"]) == count
    assert jax.eval_shape(model.apply, variables, CIFAR).shape == (4, 10)


def test_resnet_parameter_count_by_hand():
    c, w, n, k = 3, 3, 2, 10  # input channels, width, blocks per stage, classes
    model = models.make_model("resnet", k, width=w, blocks_per_stage=n)
    params = jax.eval_shape(model.init, KEY, CIFAR)["params"]
    kernels = (
        9 * c * w  # stem
        + n * 2 * 9 * w * w  # stage 0: identity shortcuts only
        + 9 * w * 2 * w + 9 * (2 * w) ** 2 + w * 2 * w  # stage 1, block 0, with 1x1 projection
        + (n - 1) * 2 * 9 * (2 * w) ** 2
        + 9 * 2 * w * 4 * w + 9 * (4 * w) ** 2 + 2 * w * 4 * w  # stage 2, block 0
        + (n - 1) * 2 * 9 * (4 * w) ** 2
        + 4 * w * k  # output
    )
    bn_channels = w + 2 * n * w + (2 * n + 1) * 2 * w + (2 * n + 1) * 4 * w
    leaves = _by_path(params)
    assert _count([leaves[p] for p in masks.PrunableSpec().paths(params)]) == kernels
    assert _count(params) == kernels + 2 * bn_channels + k  # BN scale and offset, output bias


def test_resnet_layer_names():
    params = jax.eval_shape(SMALL["resnet"].init, KEY, CIFAR)["params"]
    paths = set(_by_path(params))
    assert {"stem_conv/kernel", "stem_bn/scale", "stem_bn/bias", "output/kernel",
            "output/bias"} <= paths
    assert "stage_0_block_0/shortcut_conv/kernel" not in paths  # identity: same shape
    for s in (1, 2):
        assert {f"stage_{s}_block_0/{layer}/kernel"
                for layer in ("conv_0", "conv_1", "shortcut_conv")} <= paths
    assert len(paths) == 5 + 6 + 2 * 9  # stem and output; stage 0; stages 1 and 2


def test_default_spec_prunes_exactly_the_kernels(small):
    _, probe = small
    params = probe["variables"]["params"]
    leaves = _by_path(params)
    for path, leaf in leaves.items():
        if path.endswith("kernel"):
            assert leaf.ndim >= 2, path
        else:  # biases and BatchNorm scales and offsets
            assert leaf.ndim == 1, path
    assert masks.PrunableSpec().paths(params) == [p for p in leaves if p.endswith("kernel")]


def test_batch_stats_change_in_train_mode_only(small):
    _, probe = small
    before = probe["variables"]["batch_stats"]
    bn_params = [x for p, x in _by_path(probe["variables"]["params"]).items()
                 if not p.endswith("kernel") and p != "output/bias"]
    assert _count(before) == _count(bn_params)  # a mean and a variance per scale and offset
    changed = jax.tree_util.tree_map(lambda a, b: bool(jnp.any(a != b)), before,
                                     probe["train_stats"])
    assert all(jax.tree_util.tree_leaves(changed))
    jax.tree_util.tree_map(np.testing.assert_array_equal, before, probe["eval_stats"])
    # Evaluation uses the running averages, so an example's logits do not depend on the rest of
    # the batch; training uses the batch's statistics, so they do.
    np.testing.assert_allclose(probe["eval_first_alone"], probe["eval_logits"][0], rtol=1e-5,
                               atol=1e-6)
    assert not np.allclose(probe["train_first_alone"], probe["train_logits"][0])


@pytest.mark.slow
def test_valid_examples_alone_set_the_batch_statistics():
    """A partial batch padded with junk rows trains as if it held only its real examples."""
    model = SMALL["resnet"]
    variables = _probe(model, CIFAR)["variables"]
    padded = CIFAR.at[2:].set(100.0)

    @jax.jit
    def both(variables):
        apply = functools.partial(model.apply, variables, train=True, mutable=["batch_stats"])
        return apply(padded, valid=jnp.array([True, True, False, False])), apply(CIFAR[:2])

    (logits, stats), (expected_logits, expected_stats) = both(variables)
    np.testing.assert_allclose(logits[:2], expected_logits, rtol=1e-4, atol=1e-5)
    jax.tree_util.tree_map(functools.partial(np.testing.assert_allclose, rtol=1e-4, atol=1e-5),
                           stats, expected_stats)
    # Ignored in evaluation, and by the FCN.
    np.testing.assert_allclose(model.apply(variables, CIFAR, valid=jnp.zeros(4, bool)),
                               _probe(model, CIFAR)["eval_logits"], rtol=1e-5, atol=1e-5)
    fcn = models.make_model("fcn", 10, hidden=(3,))
    fcn_variables = fcn.init(KEY, MNIST)
    np.testing.assert_array_equal(fcn.apply(fcn_variables, MNIST, train=True, valid=None),
                                  fcn.apply(fcn_variables, MNIST))


@pytest.mark.slow
def test_jitted_vmapped_training_step():
    """What the trainer does: gradients of a train-mode loss over replicates, under jit."""
    model = SMALL["resnet"]
    variables = _probe(model, CIFAR)["variables"]
    replicates = jax.tree_util.tree_map(lambda v: jnp.stack([v, 2 * v]), variables)

    def grads_and_stats(variables):
        def loss(params):
            logits, new = model.apply({**variables, "params": params}, CIFAR, train=True,
                                      mutable=["batch_stats"])
            return jnp.mean(logits ** 2), new["batch_stats"]

        return jax.grad(loss, has_aux=True)(variables["params"])

    grads, stats = jax.jit(jax.vmap(grads_and_stats))(replicates)
    assert {p: x.shape for p, x in _by_path(grads).items()} == {
        p: x.shape for p, x in _by_path(replicates["params"]).items()}
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree_util.tree_leaves(grads))
    assert {p: x.shape for p, x in _by_path(stats).items()} == {
        p: x.shape for p, x in _by_path(replicates["batch_stats"]).items()}


def test_make_model_keeps_the_fcn_path():
    model = models.make_model("fcn", 10, hidden=(5,), use_bias=False, init="kaiming_uniform")
    assert model == models.FCN((5,), 10, use_bias=False, initializer="kaiming_uniform")
    variables = model.init(KEY, MNIST)
    assert set(variables) == {"params"}
    assert {p: x.shape for p, x in _by_path(variables["params"]).items()} == {
        "hidden_0/kernel": (784, 5), "output/kernel": (5, 10)}


def test_make_model_widths_and_arguments():
    assert models.make_model("resnet", 10) == models.ResNet(10, width=16, blocks_per_stage=3)
    assert models.make_model("vgg16", 10).width == 64
    assert models.make_model("vgg16", 10, width=8).width == 8
    assert models.make_model("densenet121", 100, growth_rate=12) == models.DenseNet(
        100, growth_rate=12, blocks=(6, 12, 24, 16))
    model = models.make_model("resnet", 10, width=4, blocks_per_stage=1, use_bias=False)
    assert "output/bias" not in _by_path(jax.eval_shape(model.init, KEY, CIFAR)["params"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "resnet18"}, "unknown model"),
        ({"init": "xavier"}, "unknown initialisation"),
        ({"width": -1}, "model.width"),
        ({"blocks_per_stage": 0}, "model.blocks_per_stage"),
        ({"growth_rate": 0}, "model.growth_rate"),
    ],
)
def test_make_model_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        models.make_model(**({"name": "resnet", "num_classes": 10} | kwargs))


def test_init_applies_to_conv_kernels():
    model = models.make_model("resnet", 10, width=32, blocks_per_stage=1,
                              init="kaiming_normal_fan_out")
    stem = jax.jit(model.init)(KEY, CIFAR[:1, :8, :8])["params"]["stem_conv"]["kernel"]
    # 864 draws of N(0, 2 / fan_out), fan_out = 9 * 32; fan_in (27) would give 3.3 times more.
    assert float(jnp.std(stem)) == pytest.approx(np.sqrt(2 / (9 * 32)), rel=0.1)


@pytest.mark.parametrize(("module", "params"), [(cifar10_noise, 272_474),
                                                (mnist_resnet_noise, 19_810)])
def test_shipped_cnn_configs_build_their_model(module, params):
    for arg in (None, "smoke"):
        c = module.get_config(arg)
        config_lib.validate(c)
        model = models.make_model(c.model.name, 10, hidden=c.model.hidden,
                                  use_bias=c.model.use_bias, init=c.model.init,
                                  width=c.model.width, blocks_per_stage=c.model.blocks_per_stage,
                                  growth_rate=c.model.growth_rate)
        x = CIFAR if c.data.name == "cifar10" else MNIST
        shapes = jax.eval_shape(model.init, KEY, x)["params"]
        if arg is None:
            assert _count(shapes) == params
        masks.PrunableSpec(tuple(c.prune.exclude)).flags(shapes)  # the exclusions match


@pytest.mark.parametrize(
    ("field", "value"),
    [("model.width", -1), ("model.blocks_per_stage", 0), ("model.growth_rate", 0),
     ("data.classes", 1), ("data.classes", -2), ("data.augment", 1)],
)
def test_cnn_config_fields_are_validated(field, value):
    c = cifar10_noise.get_config("smoke")
    section, name = field.split(".")
    with c[section].ignore_type():
        c[section][name] = value
    with pytest.raises(config_lib.ConfigError, match=rf"config\.{field}: must be"):
        config_lib.validate(c)
