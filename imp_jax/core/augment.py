"""On-device data augmentation of uint8 image batches (NHWC): pure, jittable, vectorised.

Images stay uint8 on the device (a quarter of float32's memory, so all of CIFAR fits beside the
model) and are augmented and normalised per minibatch inside the compiled training step, as the
reference code's torchvision pipeline did per example: ``RandomCrop(32, padding=4)``,
``RandomHorizontalFlip()``, ``ToTensor()``, ``Normalize(mean, std)``. Padding the raw uint8 image
with zeros matches that order (the crop pads black pixels, before normalisation).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp


def normalise(images: jax.Array, mean: Sequence[float], std: Sequence[float]) -> jax.Array:
    """Scales uint8 images (..., C) to [0, 1], then standardises each channel; float32.

    The device twin of :func:`imp_jax.data.datasets.normalise_images`.
    """
    scaled = images.astype(jnp.float32) / 255.0
    return (scaled - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def draw_flip_crop(key: jax.Array, n: int, pad: int = 4) -> tuple[jax.Array, jax.Array]:
    """The random choices of :func:`random_flip_crop` for ``n`` images.

    Returns ``(offsets, flips)``: int32 (n, 2) top-left corners (row, column) of the crop windows
    in the padded image, each uniform in ``0..2 * pad``, and bool (n,) horizontal flips (p = 1/2).
    """
    offset_key, flip_key = jax.random.split(key)
    offsets = jax.random.randint(offset_key, (n, 2), 0, 2 * pad + 1, dtype=jnp.int32)
    return offsets, jax.random.bernoulli(flip_key, 0.5, (n,))


def flip_crop(images: jax.Array, offsets: jax.Array, flips: jax.Array, pad: int = 4) -> jax.Array:
    """Crops each image (N, H, W, C) from its ``pad``-zero-padded copy at ``offsets`` (N, 2), then
    mirrors it horizontally where ``flips`` (N,) is True. Same shape and dtype as ``images``."""
    h, w, c = images.shape[1:]
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))

    def crop(image: jax.Array, offset: jax.Array) -> jax.Array:
        return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (h, w, c))

    # vmap turns the per-image slice into one gather over the batch.
    cropped = jax.vmap(crop)(padded, offsets)
    return jnp.where(flips[:, None, None, None], cropped[:, :, ::-1], cropped)


def random_flip_crop(key: jax.Array, images: jax.Array, pad: int = 4) -> jax.Array:
    """Random horizontal flip and random ``pad``-pixel-padded crop of each image (N, H, W, C).

    Each image gets its own crop window and flip (see :func:`draw_flip_crop`); uint8 in, uint8
    out (any dtype works: it only moves pixels).
    """
    offsets, flips = draw_flip_crop(key, images.shape[0], pad)
    return flip_crop(images, offsets, flips, pad)


def augment_and_normalise(key: jax.Array, images: jax.Array, mean: Sequence[float],
                          std: Sequence[float], pad: int = 4) -> jax.Array:
    """:func:`random_flip_crop`, then :func:`normalise`: a uint8 batch to a float32 batch."""
    return normalise(random_flip_crop(key, images, pad), mean, std)
