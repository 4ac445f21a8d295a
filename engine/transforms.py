"""Image preprocessing, numpy only. Each model's preprocessing lives here and nowhere else.

SCLIP (MMSegmentation test pipeline of the official code):
  1. `Resize(scale=(2048, S), keep_ratio=True)` on the uint8 image: mmcv's `imrescale`, i.e. cv2 bilinear
     (half-pixel centres, no antialiasing) to the size given by `sclip_resize_shape`, rounded to uint8.
  2. `SegDataPreProcessor`: float, (x - mean) / std with CLIP's mean/std on 0-255 RGB.
We keep that order (resize the uint8 image, round, then normalise) so the network sees what it saw in the
paper's evaluation; `resize_image_u8` matches cv2 within one grey level (cv2 uses 11-bit weights).
"""

from __future__ import annotations

import numpy as np

CLIP_MEAN_255 = np.array([122.771, 116.746, 104.094], dtype=np.float32)
CLIP_STD_255 = np.array([68.501, 66.632, 70.323], dtype=np.float32)


def _axis_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of bilinear resampling along one axis, as torch computes them for
    align_corners=False without antialiasing: src = (dst + 0.5) * in/out - 0.5, clamped at 0."""
    scale = np.float64(np.float32(in_size / out_size))
    # float32 scale, but src rounded once from the exact product (as torch's fused multiply-add does): this
    # matches torch's weights bit for bit instead of to a few ulps.
    src = ((np.arange(out_size, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    src = np.maximum(src, np.float32(0.0))
    index0 = np.minimum(src.astype(np.int64), in_size - 1)
    index1 = np.minimum(index0 + 1, in_size - 1)
    weight1 = (src - index0.astype(np.float32)).astype(np.float32)
    weight0 = np.float32(1.0) - weight1
    return index0, index1, weight0, weight1


def _resize_axis(array: np.ndarray, out_size: int, axis: int) -> np.ndarray:
    in_size = array.shape[axis]
    if in_size == out_size:
        return array
    index0, index1, weight0, weight1 = _axis_taps(in_size, out_size)
    shape = [1] * array.ndim
    shape[axis] = out_size
    lower = np.take(array, index0, axis=axis)
    upper = np.take(array, index1, axis=axis)
    return lower * weight0.reshape(shape) + upper * weight1.reshape(shape)


def resize_bilinear(
    array: np.ndarray, size_hw: tuple[int, int], *, channels_last: bool = False
) -> np.ndarray:
    """Bilinear resize equal to torch `F.interpolate(mode="bilinear", align_corners=False, antialias=False)`.

    array: float32 [C, H, W] (or [H, W, C] with channels_last=True, or [H, W]); also [N, C, H, W].
    size_hw: (out_h, out_w). Returns float32 of the same layout with H, W replaced. Separable: rows, then
    columns (the two passes commute up to float rounding, ~1e-7 relative).
    """
    array = np.asarray(array, dtype=np.float32)
    out_h, out_w = int(size_hw[0]), int(size_hw[1])
    assert out_h > 0 and out_w > 0, size_hw
    if array.ndim == 2:
        h_axis, w_axis = 0, 1
    elif channels_last:
        assert array.ndim == 3, array.shape
        h_axis, w_axis = 0, 1
    else:
        h_axis, w_axis = array.ndim - 2, array.ndim - 1
    resized = _resize_axis(array, out_h, h_axis)
    resized = _resize_axis(resized, out_w, w_axis)
    return np.ascontiguousarray(resized, dtype=np.float32)


def sclip_resize_shape(height: int, width: int, short_side: int, long_cap: int = 2048) -> tuple[int, int]:
    """Output (h, w) of mmcv's keep-ratio rescale to scale=(long_cap, short_side), as SCLIP's configs use.

    scale = min(long_cap / long edge, short_side / short edge); each side int(x * scale + 0.5).
    short_side 0 means no resize.
    """
    if short_side == 0:
        return height, width
    max_long, max_short = max(long_cap, short_side), min(long_cap, short_side)
    scale = min(max_long / max(height, width), max_short / min(height, width))
    return int(height * scale + 0.5), int(width * scale + 0.5)


def resize_image_u8(image_u8: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """uint8 [H, W, 3] -> uint8 [h, w, 3], bilinear (half-pixel centres, no antialias), rounded half up like
    cv2's fixed-point INTER_LINEAR (which mmcv's `imrescale` calls)."""
    assert image_u8.dtype == np.uint8 and image_u8.ndim == 3, (image_u8.dtype, image_u8.shape)
    if tuple(image_u8.shape[:2]) == tuple(size_hw):
        return image_u8
    resized = resize_bilinear(image_u8.astype(np.float32), size_hw, channels_last=True)
    return np.clip(np.floor(resized + 0.5), 0, 255).astype(np.uint8)


def normalize_clip(image_u8: np.ndarray) -> np.ndarray:
    """uint8 RGB [H, W, 3] -> float32 [3, H, W], (x - mean) / std with CLIP's 0-255 mean/std."""
    assert image_u8.ndim == 3 and image_u8.shape[2] == 3, image_u8.shape
    normalized = (image_u8.astype(np.float32) - CLIP_MEAN_255) / CLIP_STD_255
    return np.ascontiguousarray(normalized.transpose(2, 0, 1))


def sclip_preprocess(image_u8: np.ndarray, short_side: int, long_cap: int = 2048) -> np.ndarray:
    """SCLIP's whole preprocessing: uint8 RGB [H, W, 3] -> float32 [3, h, w] normalised, (h, w) from
    `sclip_resize_shape` (the network's frame; predictions are resized back to H×W afterwards)."""
    height, width = image_u8.shape[:2]
    resized = resize_image_u8(image_u8, sclip_resize_shape(height, width, short_side, long_cap))
    return normalize_clip(resized)
