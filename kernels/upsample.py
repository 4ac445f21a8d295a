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
from numba import njit

from .rle import Rle, _strings

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


@njit(cache=True, nogil=True, inline="always")
def _fma(a, wa, b, wb):
    """torch's fma(a, wa, b * wb) in float64: a * wa is exact there and b * wb is rounded as float32."""
    return np.float64(a) * np.float64(wa) + np.float64(b * wb)


@njit(cache=True, nogil=True)
def _axis_window(index0, index1, low, high, limit_lo, limit_hi):
    """Half-open range of outputs whose two taps reach the source range [low, high], within the limits."""
    start = limit_lo
    while start < limit_hi and index1[start] < low:
        start += 1
    stop = limit_hi
    while stop > start and index0[stop - 1] > high:
        stop -= 1
    return start, stop


@njit(cache=True, nogil=True)
def _window(logits, taps_y0, taps_y1, taps_x0, taps_x1, limits):
    """Output window (y0, y1, x0, x1), half-open, outside which the upsampled mask is surely False.

    logits: float32 [h, w]; limits int64 [4] (y0, y1, x0, x1), the window allowed by a prompt box.
    """
    height, width = logits.shape
    row_lo, row_hi, col_lo, col_hi = height, -1, width, -1
    for r in range(height):
        for c in range(width):
            if logits[r, c] > 0:
                row_lo = min(row_lo, r)
                row_hi = max(row_hi, r)
                col_lo = min(col_lo, c)
                col_hi = max(col_hi, c)
    if row_hi < 0:
        return 0, 0, 0, 0
    y0, y1 = _axis_window(taps_y0, taps_y1, row_lo, row_hi, limits[0], limits[1])
    x0, x1 = _axis_window(taps_x0, taps_x1, col_lo, col_hi, limits[2], limits[3])
    if y0 >= y1 or x0 >= x1:
        return 0, 0, 0, 0
    return y0, y1, x0, x1


@njit(cache=True, nogil=True)
def _interpolate_rows(logits, rows, r0, r1, x0, x1, taps_x0, taps_x1, lam_x0, lam_x1):
    """rows[r - r0, ox] = source row r resampled to output column ox, for r in [r0, r1), ox in [x0, x1)."""
    for r in range(r0, r1):
        for ox in range(x0, x1):
            value = _fma(logits[r, taps_x0[ox]], lam_x0[ox], logits[r, taps_x1[ox]], lam_x1[ox])
            rows[r - r0, ox] = np.float32(value)


@njit(cache=True, nogil=True)
def _upsample_dense(low_res, taps_y0, taps_y1, lam_y0, lam_y1, taps_x0, taps_x1, lam_x0, lam_x1, limits, out):
    """Fill bool out [B, H, W] (zeroed) with the thresholded upsampled logits, window by window."""
    rows = np.empty((low_res.shape[1], out.shape[2]), np.float32)
    for k in range(low_res.shape[0]):
        y0, y1, x0, x1 = _window(low_res[k], taps_y0, taps_y1, taps_x0, taps_x1, limits[k])
        if y0 == y1:
            continue
        r0, r1 = taps_y0[y0], taps_y1[y1 - 1] + 1
        _interpolate_rows(low_res[k], rows, r0, r1, x0, x1, taps_x0, taps_x1, lam_x0, lam_x1)
        for oy in range(y0, y1):
            top = rows[taps_y0[oy] - r0]
            bottom = rows[taps_y1[oy] - r0]
            w0, w1 = lam_y0[oy], lam_y1[oy]
            for ox in range(x0, x1):
                out[k, oy, ox] = _fma(top[ox], w0, bottom[ox], w1) > 0


@njit(cache=True, nogil=True)
def _columns(logits, cols, r0, r1, x0, x1, taps_x0, taps_x1, lam_x0, lam_x1):
    """cols[ox - x0, r - r0] = source row r resampled to output column ox (column-major scratch)."""
    for ox in range(x0, x1):
        i0, i1, w0, w1 = taps_x0[ox], taps_x1[ox], lam_x0[ox], lam_x1[ox]
        for r in range(r0, r1):
            cols[ox - x0, r - r0] = np.float32(_fma(logits[r, i0], w0, logits[r, i1], w1))


@njit(cache=True, nogil=True)
def _push(counts, n, value):
    """Append value at counts[n], doubling the buffer when full; returns the buffer."""
    if n == counts.shape[0]:
        bigger = np.empty(2 * counts.shape[0], counts.dtype)
        bigger[:n] = counts
        counts = bigger
    counts[n] = value
    return counts


@njit(cache=True, nogil=True)
def _upsample_counts(
    low_res, height, taps_y0, taps_y1, lam_y0, lam_y1, taps_x0, taps_x1, lam_x0, lam_x1, limits
):
    """COCO counts of the thresholded upsampled masks, walked column by column (column-major order).

    Returns (counts uint32, offsets int64 [B + 1]) as `rle.encode_counts`. Pixels outside a mask's window are
    0: a gap between two window segments (or after the last one) ends a run of 1s.
    """
    n_masks, in_h, _ = low_res.shape
    width = taps_x0.shape[0]
    total = np.int64(height) * width
    cols = np.empty((width, in_h), np.float32)
    counts = np.empty(max(16, 8 * n_masks), np.uint32)
    offsets = np.zeros(n_masks + 1, np.int64)
    n = 0
    for k in range(n_masks):
        y0, y1, x0, x1 = _window(low_res[k], taps_y0, taps_y1, taps_x0, taps_x1, limits[k])
        previous = False
        last = np.int64(0)  # position of the last value change
        segment_end = np.int64(0)  # position after the last pixel computed
        if y0 < y1:
            r0, r1 = taps_y0[y0], taps_y1[y1 - 1] + 1
            _columns(low_res[k], cols, r0, r1, x0, x1, taps_x0, taps_x1, lam_x0, lam_x1)
        for ox in range(x0, x1):
            column = cols[ox - x0]
            position = np.int64(ox) * height + y0
            if previous and position != segment_end:  # zeros in between end the run of 1s
                counts = _push(counts, n, segment_end - last)
                n += 1
                last = segment_end
                previous = False
            for oy in range(y0, y1):
                value = _fma(column[taps_y0[oy] - r0], lam_y0[oy], column[taps_y1[oy] - r0], lam_y1[oy]) > 0
                if value != previous:
                    counts = _push(counts, n, position - last)
                    n += 1
                    last = position
                    previous = value
                position += 1
            segment_end = position
        if previous and segment_end != total:
            counts = _push(counts, n, segment_end - last)
            n += 1
            last = segment_end
        counts = _push(counts, n, total - last)
        n += 1
        offsets[k + 1] = n
    return counts[:n], offsets


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
    _upsample_dense(low_res, *taps_y, *taps_x, limits, out)
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
    counts, offsets = _upsample_counts(low_res, height, *taps_y, *taps_x, limits)
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
