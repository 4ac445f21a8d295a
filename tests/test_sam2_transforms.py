"""engine.sam2_transforms against sam2's own SAM2Transforms and SAM2ImagePredictor prompt handling."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clipsam.engine.transforms import (
    SAM2_IMAGE_SIZE,
    antialias_taps,
    preprocess_sam2,
    resize_antialias,
    sam2_box_points,
    sam2_point_coords,
)


@pytest.fixture(scope="module")
def sam2_transforms():
    from sam2.utils.transforms import SAM2Transforms

    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning
        )
        return SAM2Transforms(resolution=SAM2_IMAGE_SIZE, mask_threshold=0.0)


@pytest.mark.parametrize(
    "height, width", [(480, 640), (1080, 1920), (300, 200), (1024, 1024), (97, 131), (1, 2)]
)
def test_preprocess_equals_sam2(sam2_transforms, height: int, width: int) -> None:
    image = np.random.default_rng(height * width).integers(0, 256, (height, width, 3), dtype=np.uint8)
    ours = preprocess_sam2(image)
    theirs = sam2_transforms(image)[None].numpy()
    assert ours.dtype == np.float32 and ours.shape == (1, 3, 1024, 1024)
    assert np.abs(ours - theirs).max() <= 1e-5
    # the fused multiply-adds of torch's loop are emulated: in practice bit-identical
    assert (ours != theirs).mean() < 1e-4


def test_sam2_resize_is_antialiased_by_default() -> None:
    """Guards the assumption behind preprocess_sam2: torchvision's Resize antialiases tensors."""
    from torchvision.transforms import Resize

    planes = torch.rand(3, 300, 500)
    resized = Resize((128, 128))(planes)
    antialiased = F.interpolate(
        planes[None], (128, 128), mode="bilinear", align_corners=False, antialias=True
    )
    torch.testing.assert_close(resized, antialiased[0], rtol=0, atol=0)


@pytest.mark.parametrize("in_size, out_size", [(640, 1024), (1920, 1024), (131, 1024), (3000, 17), (5, 5)])
def test_antialias_taps_match_torch(in_size: int, out_size: int) -> None:
    eye = torch.eye(in_size)[None, :, None, :]  # channel c = a delta at input column c
    weights = F.interpolate(eye, (1, out_size), mode="bilinear", align_corners=False, antialias=True)
    first, taps = antialias_taps(in_size, out_size)
    dense = np.zeros((out_size, in_size), np.float32)
    for k in range(taps.shape[1]):
        inside = first + k < in_size
        dense[np.nonzero(inside)[0], (first + k)[inside]] += taps[inside, k]
    np.testing.assert_array_equal(dense, weights[0, :, 0, :].numpy().T)


def test_resize_antialias_upsamples_and_downsamples() -> None:
    planes = np.random.default_rng(1).random((2, 37, 90), dtype=np.float32)
    for size in [(100, 20), (37, 200), (3, 3)]:
        theirs = F.interpolate(torch.from_numpy(planes)[None], size, mode="bilinear", antialias=True)[
            0
        ].numpy()
        np.testing.assert_allclose(resize_antialias(planes, size), theirs, rtol=0, atol=1e-6)


def test_point_and_box_transforms_equal_sam2(sam2_transforms) -> None:
    rng = np.random.default_rng(2)
    height, width = 480, 641
    coords = rng.uniform(0, 640, (5, 3, 2))
    theirs = sam2_transforms.transform_coords(
        torch.as_tensor(coords, dtype=torch.float), normalize=True, orig_hw=(height, width)
    )
    ours = sam2_point_coords(coords, height, width)
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours, theirs.numpy())
    boxes = np.sort(rng.uniform(0, 480, (5, 2, 2)), axis=1).reshape(5, 4)
    corners, labels = sam2_box_points(boxes, height, width)
    theirs = sam2_transforms.transform_boxes(
        torch.as_tensor(boxes, dtype=torch.float), normalize=True, orig_hw=(height, width)
    )
    np.testing.assert_array_equal(corners, theirs.numpy())
    np.testing.assert_array_equal(labels, np.tile(np.array([[2, 3]], np.int32), (5, 1)))
    assert labels.dtype == np.int32


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="uint8"):
        preprocess_sam2(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        preprocess_sam2(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="last dimension"):
        sam2_point_coords(np.zeros((2, 3)), 10, 10)
    with pytest.raises(ValueError, match="boxes"):
        sam2_box_points(np.zeros((2, 2)), 10, 10)


def test_module_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import clipsam.engine.transforms, clipsam.kernels.upsample\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
