"""SAM2's low-resolution mask logits to full-size masks (and straight to COCO RLE), without torch.

The reference is sam2's post-processing: `F.interpolate(low_res, (H, W), mode="bilinear",
align_corners=False) > 0` on float32 CPU tensors. torch computes, per axis, a float32 scale in / out, a source
position max((dst + 0.5) * scale - 0.5, 0) rounded once to float32, index0 = floor, index1 = index0 + 1
clamped to the last input pixel, lambda1 = position - index0, lambda0 = 1 - lambda1. It interpolates along
the width first and then combines two rows, each combination `t0 * w0 + t1 * w1` compiled as
fma(t0, w0, t1 * w1). The kernels here do the same float32 steps (the fused multiply-add emulated in float64,
whose sign is exact, so the thresholded masks are identical; the intermediate row values can differ from
torch's only by double rounding, which we never observed). torch uses a different kernel order for outputs
with H + W <= 128 (its channels-last path): there values may differ by an ulp, so a mask pixel can differ only
where |logit| is below ~1e-6.

Only the window that can be positive is computed: an output pixel is a non-negative combination of its four
source logits, so it can be > 0 only if one of them is. Each mask's window is therefore derived from the
bounding box of its positive low-resolution logits, which is exact (pixels outside are exactly False).
Optional `boxes` shrink the window further to each prompt box plus a margin: an approximation, valid when
the mask lies inside that expanded box (pixels of the true mask outside it are dropped).

Importing this module compiles nothing; `warmup_upsample()` compiles (or loads from numba's cache) the
kernels.
"""

from __future__ import annotations

import numpy as np

from ._lazy import LazyModule
from .rle import Rle, _strings

_kernels = LazyModule("clipsam.kernels._upsample_kernels")  # numba: imported on first call

DEFAULT_BOX_MARGIN = 16.0  # pixels of the output frame added on each side of a prompt box


def bilinear_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of torch's bilinear resampling (align_corners=False) along one axis.

    Returns (index0 int64 [out_size], index1 int64 [out_size], lambda0 float32, lambda1 float32):
    output i = input[index0[i]] * lambda0[i] + input[index1[i]] * lambda1[i].
    """
    if in_size == out_size:  # torch's copy case
        index = np.arange(out_size, dtype=np.int64)
        return index, index.copy(), np.ones(out_size, np.float32), np.zeros(out_size, np.float32)
    scale = np.float32(in_size) / np.float32(out_size)
    # (dst + 0.5) * scale is exact in float64, so one rounding to float32 = torch's fused multiply-add
    position = ((np.arange(out_size, dtype=np.float64) + 0.5) * np.float64(scale) - 0.5).astype(np.float32)
    position = np.maximum(position, np.float32(0.0))
    index0 = np.minimum(np.floor(position).astype(np.int64), in_size - 1)
    index1 = np.minimum(index0 + 1, in_size - 1)
    lambda1 = np.clip(position - index0.astype(np.float32), 0.0, 1.0).astype(np.float32)
    lambda0 = (np.float32(1.0) - lambda1).astype(np.float32)
    return index0, index1, lambda0, lambda1


def _check_inputs(low_res: np.ndarray, height: int, width: int) -> np.ndarray:
    low_res = np.ascontiguousarray(low_res, dtype=np.float32)
    if low_res.ndim != 3 or low_res.shape[1] == 0 or low_res.shape[2] == 0:
        raise ValueError(f"low_res must be [B, h, w] logits with h, w > 0, got shape {low_res.shape}")
    if int(height) < 1 or int(width) < 1:
        raise ValueError(f"output size must be at least 1 x 1, got {height} x {width}")
    return low_res


def _limits(boxes: np.ndarray | None, n_masks: int, height: int, width: int, margin: float) -> np.ndarray:
    """Per-mask allowed output window int64 [B, 4] (y0, y1, x0, x1), half-open: the whole image, or each
    box (x0, y0, x1, y1, image frame) grown by `margin` pixels on every side."""
    limits = np.tile(np.array([0, height, 0, width], np.int64), (n_masks, 1))
    if boxes is None:
        return limits
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.shape != (n_masks, 4) or not np.isfinite(boxes).all():
        raise ValueError(f"boxes must be finite [B, 4] = [{n_masks}, 4] (x0, y0, x1, y1), got {boxes.shape}")
    lo = np.floor(boxes[:, :2] - margin).astype(np.int64)
    hi = np.ceil(boxes[:, 2:] + margin).astype(np.int64) + 1
    limits[:, 0] = np.clip(lo[:, 1], 0, height)
    limits[:, 1] = np.clip(hi[:, 1], 0, height)
    limits[:, 2] = np.clip(lo[:, 0], 0, width)
    limits[:, 3] = np.clip(hi[:, 0], 0, width)
    return limits


def upsample_masks(
    low_res: np.ndarray,
    height: int,
    width: int,
    boxes: np.ndarray | None = None,
    box_margin: float = DEFAULT_BOX_MARGIN,
) -> np.ndarray:
    """Full-size masks from low-resolution logits: bilinear (align_corners=False), then > 0.

    low_res: float32 [B, h, w] mask logits (SAM2: h = w = 256; other dtypes are cast to float32).
    height, width: the output (image) size. boxes: optional float [B, 4] (x0, y0, x1, y1) image frame; when
    given, pixels farther than box_margin pixels outside mask i's box are False without being computed (an
    approximation, exact when the mask lies inside the grown box). Without boxes the result equals
    `F.interpolate(low_res[:, None], (height, width), mode="bilinear", align_corners=False)[:, 0] > 0`.
    Returns bool [B, height, width], image frame.
    """
    low_res = _check_inputs(low_res, height, width)
    height, width = int(height), int(width)
    taps_y = bilinear_taps(low_res.shape[1], height)
    taps_x = bilinear_taps(low_res.shape[2], width)
    limits = _limits(boxes, low_res.shape[0], height, width, box_margin)
    out = np.zeros((low_res.shape[0], height, width), np.bool_)
    _kernels._upsample_dense(low_res, *taps_y, *taps_x, limits, out)
    return out


def upsample_to_rle(
    low_res: np.ndarray,
    height: int,
    width: int,
    boxes: np.ndarray | None = None,
    box_margin: float = DEFAULT_BOX_MARGIN,
) -> list[Rle]:
    """COCO RLEs of `upsample_masks(low_res, height, width, boxes, box_margin)`, without the dense masks.

    Same arguments; returns B dicts {"size": [height, width], "counts": bytes}, equal to
    `clipsam.kernels.rle.encode_batch(upsample_masks(...))`. Only one mask's [width, h] float32 scratch is
    held at a time, so memory does not grow with B x H x W.
    """
    low_res = _check_inputs(low_res, height, width)
    height, width = int(height), int(width)
    taps_y = bilinear_taps(low_res.shape[1], height)
    taps_x = bilinear_taps(low_res.shape[2], width)
    limits = _limits(boxes, low_res.shape[0], height, width, box_margin)
    counts, offsets = _kernels._upsample_counts(low_res, height, *taps_y, *taps_x, limits)
    return _strings(counts, offsets, height, width)


def warmup_upsample() -> None:
    """Compile (or load from numba's cache) the upsampling kernels for the signatures the engine uses."""
    logits = np.full((1, 4, 4), -1.0, np.float32)
    logits[0, 1:3, 1:3] = 1.0
    boxes = np.array([[1.0, 1.0, 5.0, 5.0]], np.float32)
    upsample_masks(logits, 7, 9)
    upsample_masks(logits, 7, 9, boxes)
    upsample_to_rle(logits, 7, 9)
    upsample_to_rle(logits, 7, 9, boxes)
