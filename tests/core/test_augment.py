"""Tests for imp_jax.core.augment: on-device flips, padded crops and normalisation of uint8
images."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imp_jax.core import augment
from imp_jax.data import datasets, tasks

KEY = jax.random.key(0)
MEAN, STD = tasks.get("cifar10").stats
# Random pixels in 1..255: no window of the zero-padded image equals another by chance.
IMAGES = np.random.default_rng(0).integers(1, 256, (16, 8, 6, 3), dtype=np.uint8)


def _reference(images: np.ndarray, offsets: np.ndarray, flips: np.ndarray, pad: int) -> np.ndarray:
    """Per-example numpy crop of the zero-padded image, then mirror."""
    h, w = images.shape[1:3]
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    out = np.stack([p[r:r + h, c:c + w] for p, (r, c) in zip(padded, offsets, strict=True)])
    return np.where(flips[:, None, None, None], out[:, :, ::-1], out)


def test_normalise_matches_the_host_version():
    out = augment.normalise(jnp.asarray(IMAGES), MEAN, STD)
    assert out.dtype == jnp.float32 and out.shape == IMAGES.shape
    np.testing.assert_allclose(out, datasets.normalise_images(IMAGES, MEAN, STD), rtol=1e-6,
                               atol=1e-6)


def test_flip_is_an_exact_mirror_and_no_flip_the_identity():
    offsets = np.zeros((16, 2), np.int32)
    flips = np.arange(16) % 2 == 0
    out = np.asarray(augment.flip_crop(jnp.asarray(IMAGES), offsets, flips, pad=0))
    np.testing.assert_array_equal(out[flips], IMAGES[flips, :, ::-1])
    np.testing.assert_array_equal(out[~flips], IMAGES[~flips])


def test_crop_is_a_shifted_window_of_the_zero_padded_image():
    offsets = np.array([[0, 0], [8, 8], [4, 4], [1, 7]], np.int32)
    out = np.asarray(augment.flip_crop(jnp.asarray(IMAGES[:4]), offsets, np.zeros(4, bool)))
    # Offset (0, 0) is the top-left corner: the image moves 4 pixels down and right.
    np.testing.assert_array_equal(out[0, 4:, 4:], IMAGES[0, :-4, :-4])
    assert not out[0, :4].any() and not out[0, :, :4].any()
    np.testing.assert_array_equal(out[1, :-4, :-4], IMAGES[1, 4:, 4:])  # bottom-right corner
    np.testing.assert_array_equal(out[2], IMAGES[2])  # centred: the original
    np.testing.assert_array_equal(out[3, 3:, :-3], IMAGES[3, :-3, 3:])


@pytest.mark.parametrize("pad", [4, 2])
def test_random_flip_crop_matches_the_numpy_reference(pad):
    out = augment.random_flip_crop(KEY, jnp.asarray(IMAGES), pad)
    assert out.dtype == jnp.uint8 and out.shape == IMAGES.shape
    offsets, flips = augment.draw_flip_crop(KEY, len(IMAGES), pad)
    np.testing.assert_array_equal(out, _reference(IMAGES, np.asarray(offsets),
                                                  np.asarray(flips), pad))
    # Independently of the draws: each output is exactly one window of its padded image,
    # mirrored or not.
    for image, result in zip(IMAGES, np.asarray(out), strict=True):
        matches = [
            (r, c, f)
            for r in range(2 * pad + 1) for c in range(2 * pad + 1) for f in (False, True)
            if np.array_equal(_reference(image[None], np.array([[r, c]]), np.array([f]), pad)[0],
                              result)
        ]
        assert len(matches) == 1


def test_draws_cover_every_offset_and_flip_half_the_time():
    offsets, flips = augment.draw_flip_crop(KEY, 20_000, pad=4)
    assert offsets.dtype == jnp.int32 and offsets.shape == (20_000, 2) and flips.shape == (20_000,)
    for axis in (0, 1):  # uniform over 0..8: ~2 222 each, sd ~44
        counts = np.bincount(np.asarray(offsets[:, axis]), minlength=9)
        assert len(counts) == 9 and np.all(np.abs(counts - 20_000 / 9) < 250)
    assert abs(float(flips.mean()) - 0.5) < 0.02
    # Rows and columns are drawn independently.
    assert abs(np.corrcoef(np.asarray(offsets).T)[0, 1]) < 0.03


def test_jit_same_key_same_result_other_key_other_result():
    images = jnp.asarray(IMAGES)
    jitted = jax.jit(augment.random_flip_crop, static_argnames="pad")
    first = jitted(KEY, images, pad=4)
    np.testing.assert_array_equal(first, augment.random_flip_crop(KEY, images))
    np.testing.assert_array_equal(first, jitted(KEY, images, pad=4))
    assert not np.array_equal(first, jitted(jax.random.key(1), images, pad=4))


def test_augment_and_normalise():
    images = jnp.asarray(IMAGES)
    out = jax.jit(augment.augment_and_normalise)(KEY, images, MEAN, STD)
    assert out.dtype == jnp.float32 and out.shape == IMAGES.shape
    expected = augment.normalise(augment.random_flip_crop(KEY, images), MEAN, STD)
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
    # Padding pixels are black before normalisation: (0 - mean) / std.
    corner = augment.flip_crop(images[:1], jnp.zeros((1, 2), jnp.int32), jnp.zeros(1, bool))
    np.testing.assert_allclose(augment.normalise(corner, MEAN, STD)[0, 0, 0],
                               -np.array(MEAN) / np.array(STD), rtol=1e-6)
