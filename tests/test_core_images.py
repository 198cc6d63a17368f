"""Image conversions: exact uint8 round trips, grids, hashes."""

import hashlib

import numpy as np
import pytest
import torch

from herobench.core.images import from_uint8, sha256_of_image, to_pil, to_uint8


def test_uint8_round_trip_is_exact():
    arr = np.random.default_rng(0).integers(0, 256, size=(2, 5, 7, 3), dtype=np.uint8)
    t = from_uint8(arr)
    assert t.shape == (2, 3, 5, 7) and t.dtype == torch.float32
    assert t.min() >= 0 and t.max() <= 1
    assert np.array_equal(to_uint8(t), arr)
    assert from_uint8(arr[0]).shape == (1, 3, 5, 7)


def test_to_uint8_rounds_and_clamps():
    x = torch.tensor([-0.5, 0.0, 0.4 / 255, 0.6 / 255, 1.0, 2.0]).reshape(1, 1, 1, 6).expand(1, 3, 1, 6)
    assert to_uint8(x)[0, 0, :, 0].tolist() == [0, 0, 0, 1, 255, 255]
    with pytest.raises(ValueError):
        to_uint8(torch.zeros(1, 4, 2, 2))
    with pytest.raises(ValueError):
        from_uint8(np.zeros((1, 2, 2, 3), dtype=np.float32))


def test_to_pil_gives_one_image_per_row():
    imgs = torch.zeros(5, 3, 4, 6)
    imgs[4, 0] = 1.0  # last image red
    pils = to_pil(imgs)
    assert len(pils) == 5 and pils[0].size == (6, 4)  # PIL sizes are (width, height)
    assert np.asarray(pils[4])[0, 0].tolist() == [255, 0, 0] and np.asarray(pils[0])[0, 0].tolist() == [0, 0, 0]


def test_sha256_is_of_the_uint8_bytes():
    img = from_uint8(np.random.default_rng(1).integers(0, 256, size=(4, 4, 3), dtype=np.uint8))[0]
    expected = hashlib.sha256(to_uint8(img[None]).tobytes()).hexdigest()
    assert sha256_of_image(img) == expected == sha256_of_image(img[None])
    assert sha256_of_image(img + 0.4 / 255) == expected  # rounds to the same uint8 pixels
    other = img.clone()
    other[0, 0, 0] = 1.0 - other[0, 0, 0]
    assert sha256_of_image(other) != expected
