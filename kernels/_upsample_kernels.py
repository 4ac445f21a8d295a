"""The numba kernels of `upsample`: torch's bilinear steps in float32, dense or straight to RLE counts."""

import numpy as np
from numba import njit


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
