"""SCLIP preprocessing: numpy bilinear = torch's, mmcv's rescale size, cv2-like uint8 resize, normalise."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clipsam.engine.transforms import (
    CLIP_MEAN_255,
    CLIP_STD_255,
    normalize_clip,
    resize_bilinear,
    resize_image_u8,
    sclip_preprocess,
    sclip_resize_shape,
)


def _torch_bilinear(array_nchw: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    tensor = torch.from_numpy(array_nchw)
    return F.interpolate(tensor, size=size_hw, mode="bilinear", align_corners=False, antialias=False).numpy()


@pytest.mark.parametrize(
    ("in_hw", "out_hw"),
    [
        ((14, 14), (224, 224)),  # patch grid to crop (the SCLIP case)
        ((260, 350), (261, 351)),  # odd upscale by one pixel
        ((37, 53), (19, 101)),  # down in y, up in x
        ((333, 517), (480, 640)),
        ((480, 640), (333, 517)),
        ((5, 7), (3, 2)),
        ((1, 9), (4, 4)),
        ((12, 12), (12, 12)),  # identity
    ],
)
def test_resize_bilinear_equals_torch(in_hw: tuple[int, int], out_hw: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(in_hw) + sum(out_hw))
    array = rng.standard_normal((2, 3, *in_hw)).astype(np.float32)
    expected = _torch_bilinear(array, out_hw)
    assert np.abs(resize_bilinear(array, out_hw) - expected).max() <= 1e-5  # [N, C, H, W]
    assert np.abs(resize_bilinear(array[0], out_hw) - expected[0]).max() <= 1e-5  # [C, H, W]
    channels_last = resize_bilinear(array[0].transpose(1, 2, 0), out_hw, channels_last=True)
    assert np.abs(channels_last - expected[0].transpose(1, 2, 0)).max() <= 1e-5  # [H, W, C]
    assert np.abs(resize_bilinear(array[0, 0], out_hw) - expected[0, 0]).max() <= 1e-5  # [H, W]


def test_resize_bilinear_output_is_float32_contiguous() -> None:
    resized = resize_bilinear(np.ones((3, 5, 5), np.float64), (7, 9))
    assert resized.dtype == np.float32 and resized.flags.c_contiguous and resized.shape == (3, 7, 9)
    np.testing.assert_array_equal(resized, 1.0)


@pytest.mark.parametrize(
    ("hw", "short_side", "expected"),
    [
        ((480, 640), 336, (336, 448)),
        ((640, 480), 336, (448, 336)),
        ((375, 500), 336, (336, 448)),  # a typical VOC image
        ((1024, 2048), 560, (560, 1120)),  # Cityscapes
        ((100, 5000), 336, (41, 2048)),  # the long side caps the scale
        ((333, 517), 336, (336, 522)),  # int(x * scale + 0.5)
        ((260, 350), 0, (260, 350)),  # 0 = no resize
    ],
)
def test_sclip_resize_shape(hw: tuple[int, int], short_side: int, expected: tuple[int, int]) -> None:
    assert sclip_resize_shape(*hw, short_side) == expected


@pytest.mark.parametrize("out_hw", [(336, 522), (120, 200), (500, 700)])
def test_resize_image_u8_matches_cv2_within_one_level(out_hw: tuple[int, int]) -> None:
    image = np.random.default_rng(0).integers(0, 256, (333, 517, 3), dtype=np.uint8)
    ours = resize_image_u8(image, out_hw)
    reference = cv2.resize(image, (out_hw[1], out_hw[0]), interpolation=cv2.INTER_LINEAR)
    diff = np.abs(ours.astype(np.int16) - reference)
    assert ours.dtype == np.uint8 and ours.shape == (*out_hw, 3)
    assert diff.max() <= 1 and diff.mean() < 0.2


def test_normalize_clip_is_channel_first_mean_std() -> None:
    image = np.random.default_rng(1).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    normalized = normalize_clip(image)
    expected = (image.astype(np.float64) - CLIP_MEAN_255.astype(np.float64)) / CLIP_STD_255.astype(np.float64)
    assert normalized.shape == (3, 4, 5) and normalized.dtype == np.float32
    np.testing.assert_allclose(normalized, expected.transpose(2, 0, 1), rtol=0, atol=1e-6)
    np.testing.assert_allclose(CLIP_MEAN_255, [122.771, 116.746, 104.094], rtol=1e-7)


def test_sclip_preprocess_resizes_before_normalising() -> None:
    image = np.random.default_rng(2).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    network_image = sclip_preprocess(image, short_side=336)
    assert network_image.shape == (3, 336, 448)
    np.testing.assert_array_equal(network_image, normalize_clip(resize_image_u8(image, (336, 448))))
    np.testing.assert_array_equal(sclip_preprocess(image, short_side=0), normalize_clip(image))


def test_numpy_modules_do_not_import_torch() -> None:
    code = (
        "import sys; import clipsam.engine.transforms, clipsam.engine.dense_clip, clipsam.engine.vocabulary, "
        "clipsam.engine.text.bank; assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
