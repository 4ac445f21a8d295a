"""kernels.upsample against torch's F.interpolate(bilinear, align_corners=False) > 0 and kernels.rle."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clipsam.kernels.rle import encode_batch
from clipsam.kernels.upsample import bilinear_taps, upsample_masks, upsample_to_rle, warmup_upsample


def _torch_masks(low_res: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(torch's thresholded masks bool [B, H, W], its logits float32 [B, H, W])."""
    logits = F.interpolate(
        torch.from_numpy(low_res)[:, None], (height, width), mode="bilinear", align_corners=False
    )
    logits = logits[:, 0].numpy()
    return logits > 0, logits


def _logits(seed: int, size: tuple[int, int] = (256, 256), n: int = 4) -> np.ndarray:
    """Gaussian noise, a shifted copy, an all-negative map, and a blob (the realistic SAM2 shape)."""
    rng = np.random.default_rng(seed)
    low_res = rng.standard_normal((n, *size)).astype(np.float32)
    low_res[1] -= 2.0
    low_res[2] = -np.abs(low_res[2]) - 0.1
    yy, xx = np.mgrid[0 : size[0], 0 : size[1]]
    low_res[3] = 0.3 * size[0] - np.hypot(yy - 0.4 * size[0], xx - 0.6 * size[1]).astype(np.float32)
    return low_res


@pytest.mark.parametrize(
    "height, width",
    [(480, 640), (97, 131), (1, 1), (1, 300), (300, 1), (60, 50), (100, 77), (256, 256), (513, 255)],
)
def test_upsample_masks_equals_torch(height: int, width: int) -> None:
    low_res = _logits(height * 1000 + width)
    ours = upsample_masks(low_res, height, width)
    theirs, logits = _torch_masks(low_res, height, width)
    assert ours.dtype == np.bool_ and ours.shape == (4, height, width)
    differ = ours != theirs
    # torch sums in another order for outputs with H + W <= 128: only |logit| ~ 1 ulp can flip there
    assert not (differ & (np.abs(logits) >= 1e-6)).any()
    if height + width > 128:
        assert not differ.any()
    assert not ours[2].any()


def test_non_square_low_res_and_float64_input() -> None:
    low_res = _logits(3, size=(31, 45)).astype(np.float64)
    theirs, _ = _torch_masks(low_res.astype(np.float32), 200, 90)
    np.testing.assert_array_equal(upsample_masks(low_res, 200, 90), theirs)


def test_bilinear_taps_match_torch_weights() -> None:
    for in_size, out_size in [(256, 480), (256, 100), (256, 1), (7, 7), (256, 1023)]:
        index0, index1, lambda0, lambda1 = bilinear_taps(in_size, out_size)
        eye = torch.eye(in_size)[None, :, :, None]  # channel c = a delta at input row c
        rows = F.interpolate(eye, (out_size, 1), mode="bilinear", align_corners=False)[0, :, :, 0].numpy()
        dense = np.zeros((in_size, out_size), np.float32)
        np.add.at(dense, (index0, np.arange(out_size)), lambda0)
        np.add.at(dense, (index1, np.arange(out_size)), lambda1)
        np.testing.assert_array_equal(dense, rows)


@pytest.mark.parametrize("height, width", [(480, 640), (97, 131), (1, 1), (5, 300), (1024, 3)])
def test_upsample_to_rle_equals_encode_batch(height: int, width: int) -> None:
    low_res = _logits(height + width)
    assert upsample_to_rle(low_res, height, width) == encode_batch(upsample_masks(low_res, height, width))


def test_upsample_to_rle_edge_masks() -> None:
    """All-on, all-off, a mask touching the last pixel, and a window not starting at row 0."""
    low_res = np.full((4, 16, 16), -1.0, np.float32)
    low_res[0] = 1.0
    low_res[2, -3:, -3:] = 2.0
    low_res[3, 6:9, 2:12] = 2.0
    for height, width in [(40, 30), (16, 16), (7, 50)]:
        rles = upsample_to_rle(low_res, height, width)
        assert rles == encode_batch(upsample_masks(low_res, height, width))
    assert rles[1]["counts"] == encode_batch(np.zeros((1, 7, 50), bool))[0]["counts"]


def test_boxes_equal_exact_when_mask_inside_box() -> None:
    low_res = np.full((2, 256, 256), -3.0, np.float32)
    low_res[0, 40:90, 100:180] = 4.0
    low_res[1, 150:160, 20:60] = 4.0
    height, width = 480, 640
    exact = upsample_masks(low_res, height, width)
    boxes = np.zeros((2, 4), np.float32)
    for k in range(2):
        ys, xs = np.nonzero(exact[k])
        boxes[k] = (xs.min(), ys.min(), xs.max(), ys.max())
    np.testing.assert_array_equal(upsample_masks(low_res, height, width, boxes, box_margin=2.0), exact)
    assert upsample_to_rle(low_res, height, width, boxes, box_margin=2.0) == encode_batch(exact)


def test_boxes_cut_mask_outside_box() -> None:
    """The approximation is visible when the box is too small: outside pixels are False."""
    low_res = np.full((1, 64, 64), 5.0, np.float32)
    boxes = np.array([[10.0, 20.0, 30.0, 40.0]])
    masks = upsample_masks(low_res, 100, 100, boxes, box_margin=0.0)
    expected = np.zeros((1, 100, 100), bool)
    expected[0, 20:41, 10:31] = True  # pixels x0..x1, y0..y1 inclusive
    np.testing.assert_array_equal(masks, expected)
    assert upsample_to_rle(low_res, 100, 100, boxes, box_margin=0.0) == encode_batch(expected)


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="low_res"):
        upsample_masks(np.zeros((4, 4), np.float32), 8, 8)
    with pytest.raises(ValueError, match="output size"):
        upsample_masks(np.zeros((1, 4, 4), np.float32), 0, 8)
    with pytest.raises(ValueError, match="boxes"):
        upsample_masks(np.zeros((2, 4, 4), np.float32), 8, 8, boxes=np.zeros((1, 4)))


def test_warmup_runs() -> None:
    assert warmup_upsample() is None
