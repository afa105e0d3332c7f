"""Flax (Linen) models of the study.

Layer names are stable and readable (``hidden_0``, ``stage_1_block_0/conv_0``, ``output``) so that
exclusion patterns such as ``r"^output/"`` select the layers a user means.

The convolutional networks (:class:`ResNet`, :class:`VGG16`, :class:`DenseNet`) take NHWC images,
follow every convolution by BatchNorm (so convolutions have no bias), and keep the running
statistics in the ``batch_stats`` collection: train with
``model.apply(variables, x, train=True, mutable=["batch_stats"])``, evaluate with ``train=False``
(running averages). Every conv and dense kernel has ``ndim >= 2`` and every BatchNorm parameter and
bias ``ndim == 1``, so the default mask spec prunes exactly the kernels.

Every model is called as ``model(x, train=False, valid=None)``. ``valid``, bool (N,), marks the
real examples of a padded partial batch: in training, BatchNorm's batch statistics (and so the
running averages) are taken over them only, as if the batch held only them; the FCN ignores it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

# Kaiming (He) initialisations, and PyTorch's default for nn.Linear (kaiming_uniform with
# a=sqrt(5), i.e. U(+-1/sqrt(fan_in))), which much reference code silently used.
# "kaiming_normal_fan_out" is torchvision's choice for ResNet convolutions.
INITS = {
    "kaiming_normal": nn.initializers.variance_scaling(2.0, "fan_in", "normal"),
    "kaiming_uniform": nn.initializers.variance_scaling(2.0, "fan_in", "uniform"),
    "torch_default": nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform"),
    "kaiming_normal_fan_out": nn.initializers.variance_scaling(2.0, "fan_out", "normal"),
}
# Initialisations of the dense layers' biases: zeros (Flax's default), or PyTorch's default for
# nn.Linear, U(+-1/sqrt(fan_in)), which the reference code kept (it re-initialises kernels only).
BIAS_INITS = ("zeros", "torch_default")
# Initialisations of the BatchNorm scales: ones (Flax's and PyTorch's default), or U(0, 1), the
# reference code's default (OpenLTH's batchnorm_init="uniform"); the offsets start at 0 in both.
BN_INITS = ("ones", "uniform")
# The architectures' standard widths, used when make_model gets width=0.
DEFAULT_WIDTH = {"resnet": 16, "vgg16": 64}
DENSENET121_BLOCKS = (6, 12, 24, 16)


def _dense(features: int, fan_in: int, use_bias: bool, initializer: str, bias_init: str,
           name: str) -> nn.Dense:
    bound = 1.0 / fan_in**0.5
    init = (nn.initializers.zeros if bias_init == "zeros" else
            lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound,
                                                                     bound))
    return nn.Dense(features, use_bias=use_bias, kernel_init=INITS[initializer], bias_init=init,
                    name=name)


class FCN(nn.Module):
    """Fully connected ReLU network: flatten, ``hidden`` widths, then ``num_classes`` logits.

    ``FCN((300,), 10)`` is the study's two-layer 784-300-10 network, ``FCN((P, 100), 10)`` its
    three-layer one, and ``FCN((P,), 2, use_bias=False, initializer="kaiming_uniform")`` its
    Gaussian-mixture network.
    """

    hidden: Sequence[int]
    num_classes: int
    use_bias: bool = True
    initializer: str = "kaiming_normal"
    bias_init: str = "zeros"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False,
                 valid: jax.Array | None = None) -> jax.Array:
        del train, valid  # no dropout or normalisation
        x = x.reshape(x.shape[0], -1).astype(jnp.float32)
        for i, width in enumerate(self.hidden):
            x = nn.relu(_dense(width, x.shape[-1], self.use_bias, self.initializer,
                               self.bias_init, f"hidden_{i}")(x))
        return _dense(self.num_classes, x.shape[-1], self.use_bias, self.initializer,
                      self.bias_init, "output")(x)


# PyTorch's BatchNorm defaults (running-average momentum 0.1, eps 1e-5), as in the reference code.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5
# The BatchNorm that follows each convolution of a ResNet (its stem's, or a block's).
RESNET_BN_OF = {"stem_conv": "stem_bn", "conv_0": "bn_0", "conv_1": "bn_1",
                "shortcut_conv": "shortcut_bn"}
# A ResNet block's layer name.
RESNET_BLOCK = re.compile(r"^stage_(\d+)_block_(\d+)$")


def conv_padding(size: int) -> int:
    """The padding on each side of a ``size`` x ``size`` convolution: PyTorch's symmetric
    ``size // 2`` (Flax's "SAME" pads a strided convolution asymmetrically and would shift every
    downsampled feature map)."""
    return size // 2


def _pooled_output(x: jax.Array, num_classes: int, use_bias: bool, initializer: str,
                   bias_init: str) -> jax.Array:
    """A convolutional network's head: global average pooling, then the dense ``output`` layer."""
    x = jnp.mean(x, axis=(1, 2))
    return _dense(num_classes, x.shape[-1], use_bias, initializer, bias_init, "output")(x)


def _conv(features: int, size: int, stride: int, initializer: str, name: str) -> nn.Conv:
    return nn.Conv(features, (size, size), strides=stride, padding=conv_padding(size),
                   use_bias=False, kernel_init=INITS[initializer], name=name)


def _batch_norm(x: jax.Array, train: bool, valid: jax.Array | None, name: str,
                bn_init: str = "ones") -> jax.Array:
    """BatchNorm of ``x`` (N, ...); in training, statistics over the ``valid`` examples only.

    ``bn_init`` is one of :data:`BN_INITS`."""
    mask = None if valid is None else valid.reshape(-1, *(1,) * (x.ndim - 1))
    scale_init = nn.initializers.ones if bn_init == "ones" else nn.initializers.uniform(1.0)
    return nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                        scale_init=scale_init, name=name)(x, mask=mask)


class BasicBlock(nn.Module):
    """Residual block: two 3x3 conv + BN, plus the input (or its 1x1 conv + BN projection when
    the stride or the width changes), then ReLU."""

    features: int
    stride: int = 1
    initializer: str = "kaiming_normal"
    bn_init: str = "ones"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False,
                 valid: jax.Array | None = None) -> jax.Array:
        y = _conv(self.features, 3, self.stride, self.initializer, "conv_0")(x)
        y = nn.relu(_batch_norm(y, train, valid, "bn_0", self.bn_init))
        y = _conv(self.features, 3, 1, self.initializer, "conv_1")(y)
        y = _batch_norm(y, train, valid, "bn_1", self.bn_init)
        if self.stride != 1 or x.shape[-1] != self.features:
            x = _conv(self.features, 1, self.stride, self.initializer, "shortcut_conv")(x)
            x = _batch_norm(x, train, valid, "shortcut_bn", self.bn_init)
        return nn.relu(y + x)


class ResNet(nn.Module):
    """The CIFAR residual network of the study (He et al. 2016, section 4.2), width ``width``.

    A 3x3 stem conv with ``width`` channels, three stages of ``blocks_per_stage`` basic blocks
    (:class:`BasicBlock`) with widths W, 2W, 4W and strides 1, 2, 2, global average pooling and a
    dense ``output`` layer. ``blocks_per_stage=3`` is the study's CIFAR-10 "ResNet-18" (20 layers),
    ``blocks_per_stage=1`` its MNIST "ResNet-6". Layers: ``stem_conv``, ``stem_bn``,
    ``stage_{s}_block_{b}/{conv_0, bn_0, conv_1, bn_1, shortcut_conv, shortcut_bn}``, ``output``.
    """

    num_classes: int
    width: int = 16
    blocks_per_stage: int = 3
    use_bias: bool = True
    initializer: str = "kaiming_normal"
    bias_init: str = "zeros"
    bn_init: str = "ones"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False,
                 valid: jax.Array | None = None) -> jax.Array:
        x = _conv(self.width, 3, 1, self.initializer, "stem_conv")(x.astype(jnp.float32))
        x = nn.relu(_batch_norm(x, train, valid, "stem_bn", self.bn_init))
        for s, (multiple, stride) in enumerate(((1, 1), (2, 2), (4, 2))):
            for b in range(self.blocks_per_stage):
                x = BasicBlock(multiple * self.width, stride if b == 0 else 1, self.initializer,
                               self.bn_init, name=f"stage_{s}_block_{b}")(x, train, valid)
        return _pooled_output(x, self.num_classes, self.use_bias, self.initializer,
                              self.bias_init)


class VGG16(nn.Module):
    """VGG-16 for CIFAR (as in OpenLTH): 13 3x3 conv + BN + ReLU layers of widths W, W | 2W, 2W |
    4W x3 | 8W x3 | 8W x3 with a 2x2 max-pool after each of the first four groups, global average
    pooling and a dense ``output`` layer. ``width=64`` is the standard network (64 ... 512).

    Layers: ``conv_{i}``, ``bn_{i}`` for i in 0..12, ``output``. Four pools (not five) keep a
    28x28 input valid: 28 -> 14 -> 7 -> 3 -> 1.
    """

    num_classes: int
    width: int = 64
    use_bias: bool = True
    initializer: str = "kaiming_normal"
    bias_init: str = "zeros"
    bn_init: str = "ones"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False,
                 valid: jax.Array | None = None) -> jax.Array:
        x = x.astype(jnp.float32)
        i = 0
        for group, (multiple, layers) in enumerate(((1, 2), (2, 2), (4, 3), (8, 3), (8, 3))):
            if group:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
            for _ in range(layers):
                x = _conv(multiple * self.width, 3, 1, self.initializer, f"conv_{i}")(x)
                x = nn.relu(_batch_norm(x, train, valid, f"bn_{i}", self.bn_init))
                i += 1
        return _pooled_output(x, self.num_classes, self.use_bias, self.initializer,
                              self.bias_init)


class DenseNet(nn.Module):
    """DenseNet-BC for CIFAR (Huang et al. 2017; kuangliu/pytorch-cifar), DenseNet-121 by default.

    A 3x3 stem conv with 2k channels (k the growth rate), dense blocks of ``blocks`` bottleneck
    layers (BN-ReLU-1x1 conv to 4k, BN-ReLU-3x3 conv to k, concatenated to the input), between
    blocks a transition (BN-ReLU-1x1 conv to half the channels, 2x2 average pool), then BN-ReLU,
    global average pooling and a dense ``output`` layer. Layers: ``stem_conv``,
    ``block_{i}_layer_{j}/{bn_0, conv_0, bn_1, conv_1}``, ``transition_{i}/{bn, conv}``,
    ``final_bn``, ``output``. Smaller ``blocks`` are for tests only.
    """

    num_classes: int
    growth_rate: int = 32
    blocks: Sequence[int] = DENSENET121_BLOCKS
    use_bias: bool = True
    initializer: str = "kaiming_normal"
    bias_init: str = "zeros"
    bn_init: str = "ones"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False,
                 valid: jax.Array | None = None) -> jax.Array:
        k, init, bn = self.growth_rate, self.initializer, self.bn_init
        x = _conv(2 * k, 3, 1, init, "stem_conv")(x.astype(jnp.float32))
        for i, layers in enumerate(self.blocks):
            if i:
                x = _Transition(init, bn, name=f"transition_{i - 1}")(x, train, valid)
            for j in range(layers):
                x = _Bottleneck(k, init, bn, name=f"block_{i}_layer_{j}")(x, train, valid)
        x = nn.relu(_batch_norm(x, train, valid, "final_bn", bn))
        return _pooled_output(x, self.num_classes, self.use_bias, init, self.bias_init)


class _Bottleneck(nn.Module):
    """DenseNet-BC layer: BN-ReLU-1x1 conv (4k) and BN-ReLU-3x3 conv (k), appended to the input."""

    growth_rate: int
    initializer: str
    bn_init: str

    @nn.compact
    def __call__(self, x: jax.Array, train: bool, valid: jax.Array | None) -> jax.Array:
        y = nn.relu(_batch_norm(x, train, valid, "bn_0", self.bn_init))
        y = _conv(4 * self.growth_rate, 1, 1, self.initializer, "conv_0")(y)
        y = nn.relu(_batch_norm(y, train, valid, "bn_1", self.bn_init))
        y = _conv(self.growth_rate, 3, 1, self.initializer, "conv_1")(y)
        return jnp.concatenate([x, y], axis=-1)


class _Transition(nn.Module):
    """DenseNet-BC transition: BN-ReLU-1x1 conv to half the channels, 2x2 average pool."""

    initializer: str
    bn_init: str

    @nn.compact
    def __call__(self, x: jax.Array, train: bool, valid: jax.Array | None) -> jax.Array:
        y = nn.relu(_batch_norm(x, train, valid, "bn", self.bn_init))
        # Compression 0.5, rounded down as in the reference implementations.
        y = _conv(x.shape[-1] // 2, 1, 1, self.initializer, "conv")(y)
        return nn.avg_pool(y, (2, 2), strides=(2, 2))


def make_model(name: str, num_classes: int, *, hidden: Sequence[int] = (), use_bias: bool = True,
               init: str = "kaiming_normal", bias_init: str = "zeros", bn_init: str = "ones",
               width: int = 0, blocks_per_stage: int = 3, growth_rate: int = 32) -> nn.Module:
    """Builds a model by name (one of :data:`MODELS`).

    Args:
      name: ``fcn`` (:class:`FCN`), ``resnet`` (:class:`ResNet`), ``vgg16`` (:class:`VGG16`) or
        ``densenet121`` (:class:`DenseNet`).
      num_classes: number of output logits.
      hidden: the FCN's hidden widths (FCN only).
      use_bias: biases of the dense layers (the CNNs' convolutions never have one: BN follows).
      init: initialisation of every dense and conv kernel (one of :data:`INITS`). The default,
        Kaiming normal with fan_in, is what OpenLTH's CIFAR networks use;
        ``kaiming_normal_fan_out`` is torchvision's choice for ResNet convolutions.
      bias_init: initialisation of the dense layers' biases (one of :data:`BIAS_INITS`).
      bn_init: initialisation of the BatchNorm scales (one of :data:`BN_INITS`; CNNs only).
      width: the ResNet's W or VGG-16's base width; 0 = the standard one (16, 64).
      blocks_per_stage: the ResNet's blocks per stage (3: CIFAR "ResNet-18", 1: MNIST "ResNet-6").
      growth_rate: the DenseNet's growth rate k.

    Arguments a model does not use are ignored.
    """
    if name not in MODELS:
        raise ValueError(f"model.name: unknown model {name!r}; expected one of "
                         f"{tuple(MODELS)}")
    if init not in INITS:
        raise ValueError(f"model.init: unknown initialisation {init!r}; expected one of "
                         f"{tuple(INITS)}")
    for field, value, options in (("bias_init", bias_init, BIAS_INITS),
                                  ("bn_init", bn_init, BN_INITS)):
        if value not in options:
            raise ValueError(f"model.{field}: unknown initialisation {value!r}; expected one of "
                             f"{options}")
    for field, value, lo in (("width", width, 0), ("blocks_per_stage", blocks_per_stage, 1),
                             ("growth_rate", growth_rate, 1)):
        if value < lo:
            raise ValueError(f"model.{field}: must be >= {lo}, got {value}")
    return MODELS[name](num_classes, hidden=tuple(hidden), width=width or DEFAULT_WIDTH.get(
        name, 0), blocks_per_stage=blocks_per_stage, growth_rate=growth_rate, bn_init=bn_init,
        common={"use_bias": use_bias, "initializer": init, "bias_init": bias_init})


# The architectures by name: each builds its module from make_model's arguments (ignoring those
# it does not use); ``common`` holds the dense layers' and kernels' settings.
MODELS: dict[str, Callable[..., nn.Module]] = {
    "fcn": lambda k, *, hidden, common, **_: FCN(hidden, k, **common),
    "resnet": lambda k, *, width, blocks_per_stage, bn_init, common, **_: ResNet(
        k, width, blocks_per_stage, bn_init=bn_init, **common),
    "vgg16": lambda k, *, width, bn_init, common, **_: VGG16(k, width, bn_init=bn_init, **common),
    "densenet121": lambda k, *, growth_rate, bn_init, common, **_: DenseNet(
        k, growth_rate, DENSENET121_BLOCKS, bn_init=bn_init, **common),
}


def register_model(name: str, build: Callable[..., nn.Module]) -> None:
    """Makes ``name`` a valid ``model.name``: ``build(num_classes, **options)`` returns the
    Flax module, with the options of :func:`make_model` as keywords (``hidden``, ``width``,
    ``blocks_per_stage``, ``growth_rate``, ``bn_init`` and ``common``, the dense layers'
    ``use_bias``, ``initializer`` and ``bias_init``); it may ignore those it does not use (take
    ``**_``). The module's ``__call__(x, train=False, valid=None)`` returns the logits."""
    MODELS[name] = build


# The models whose size a width sweep sets (imp_jax.study.sweep): the FCN's first hidden width,
# or W.
WIDE_MODELS = ("fcn", "resnet", "vgg16")
