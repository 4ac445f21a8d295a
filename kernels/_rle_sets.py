"""Mask set kernels on foreground intervals (see `_rle_ops.intervals`): NMS, overlap resolution, the IoU
matrix, and the boxes pycocotools uses to skip IoU pairs.

None decodes masks to dense pixels: cost grows with the number of runs, not with h * w. The IoU matrix
decodes the compressed strings straight into position-sorted interval events and sweeps them once.
"""

import numpy as np
from numba import njit

from ._rle_codec import read_count
from ._rle_ops import intersection


@njit(cache=True, nogil=True)
def greedy_nms(starts, ends, run_offsets, areas, groups, order, iou_threshold):
    """Keep-mask of greedy NMS within each group: bool [n].

    order: int64 [n], masks from best to worst. A mask is dropped when its IoU with an already kept mask of
    the same group exceeds iou_threshold. areas: int64 [n]; groups: int64 [n].
    """
    n = order.shape[0]
    keep = np.zeros(n, np.bool_)
    kept = np.empty(n, np.int64)
    n_kept = 0
    for rank in range(n):
        candidate = order[rank]
        suppressed = False
        for t in range(n_kept):
            other = kept[t]
            if groups[other] != groups[candidate]:
                continue
            inter = intersection(starts, ends, run_offsets, candidate, other)
            union = areas[candidate] + areas[other] - inter
            if union > 0 and inter / union > iou_threshold:
                suppressed = True
                break
        if not suppressed:
            keep[candidate] = True
            kept[n_kept] = candidate
            n_kept += 1
    return keep


@njit(cache=True, nogil=True)
def _subtract(starts, ends, lo, hi, cov_starts, cov_ends, n_cov, out_starts, out_ends):
    """Write intervals [lo, hi) of (starts, ends) minus the covered set; returns how many were written."""
    n_out = 0
    c = 0
    for i in range(lo, hi):
        start = starts[i]
        end = ends[i]
        while c < n_cov and cov_ends[c] <= start:
            c += 1
        scan = c
        while start < end:
            if scan < n_cov and cov_starts[scan] < end:
                if cov_starts[scan] > start:
                    out_starts[n_out] = start
                    out_ends[n_out] = cov_starts[scan]
                    n_out += 1
                start = max(start, cov_ends[scan])
                scan += 1
            else:
                out_starts[n_out] = start
                out_ends[n_out] = end
                n_out += 1
                start = end
    return n_out


@njit(cache=True, nogil=True)
def _union(a_starts, a_ends, n_a, b_starts, b_ends, lo, hi, out_starts, out_ends):
    """Sorted union of two interval sets (touching intervals fused); returns the count written."""
    i = 0
    j = lo
    n_out = 0
    while i < n_a or j < hi:
        if j >= hi or (i < n_a and a_starts[i] <= b_starts[j]):
            start, end = a_starts[i], a_ends[i]
            i += 1
        else:
            start, end = b_starts[j], b_ends[j]
            j += 1
        if n_out > 0 and start <= out_ends[n_out - 1]:
            out_ends[n_out - 1] = max(out_ends[n_out - 1], end)
        else:
            out_starts[n_out] = start
            out_ends[n_out] = end
            n_out += 1
    return n_out


@njit(cache=True, nogil=True)
def resolve(starts, ends, run_offsets, order, total):
    """Give each pixel to the first mask in `order` that covers it; returns (counts uint32, offsets int64).

    order: int64 [n], masks from highest to lowest priority. The output counts are in input-mask order and
    canonical: a zero-length run only as a leading 0 count, as `encode` writes them.
    """
    n = order.shape[0]
    capacity = starts.shape[0] + 1
    cov_starts = np.empty(capacity, np.int64)
    cov_ends = np.empty(capacity, np.int64)
    next_starts = np.empty(capacity, np.int64)
    next_ends = np.empty(capacity, np.int64)
    own_starts = np.empty(capacity, np.int64)
    own_ends = np.empty(capacity, np.int64)
    own_offsets = np.zeros(n + 1, np.int64)
    pieces_of = np.zeros(n, np.int64)
    piece_start = np.zeros(n, np.int64)
    n_cov = 0
    n_own = 0
    # Subtracting a set of disjoint intervals can split each interval, so own_* may need to grow.
    for rank in range(n):
        k = order[rank]
        lo, hi = run_offsets[k], run_offsets[k + 1]
        needed = n_own + (hi - lo) + n_cov + 1
        if needed > own_starts.shape[0]:
            grown = max(needed, 2 * own_starts.shape[0])
            own_starts = np.concatenate((own_starts[:n_own], np.empty(grown - n_own, np.int64)))
            own_ends = np.concatenate((own_ends[:n_own], np.empty(grown - n_own, np.int64)))
        piece_start[k] = n_own
        written = _subtract(
            starts, ends, lo, hi, cov_starts, cov_ends, n_cov, own_starts[n_own:], own_ends[n_own:]
        )
        pieces_of[k] = written
        n_own += written
        if n_cov + (hi - lo) > next_starts.shape[0]:
            next_starts = np.empty(2 * (n_cov + hi - lo), np.int64)
            next_ends = np.empty(2 * (n_cov + hi - lo), np.int64)
        n_cov = _union(cov_starts, cov_ends, n_cov, starts, ends, lo, hi, next_starts, next_ends)
        cov_starts, next_starts = next_starts, cov_starts
        cov_ends, next_ends = next_ends, cov_ends
    counts = np.empty(2 * n_own + n, np.uint32)
    m = 0
    for k in range(n):
        position = np.int64(0)
        for p in range(piece_start[k], piece_start[k] + pieces_of[k]):
            if p > piece_start[k] and own_starts[p] == position:
                # touching pieces (only from touching input intervals) fuse into one run
                counts[m - 1] += own_ends[p] - own_starts[p]
            else:
                counts[m] = own_starts[p] - position
                counts[m + 1] = own_ends[p] - own_starts[p]
                m += 2
            position = own_ends[p]
        # COCO counts end with the last run: no trailing empty background run (but an empty mask is [total])
        if position < total or pieces_of[k] == 0:
            counts[m] = total - position
            m += 1
        own_offsets[k + 1] = m
    return counts[:m], own_offsets


_UINT32 = 0xFFFFFFFF


@njit(cache=True, nogil=True, inline="always")
def _box_start(box, width, height):
    """Reset box (int64 [4]: x_min, y_min, x_max, y_max) to pycocotools' empty start (w, h, 0, 0)."""
    box[0] = width & _UINT32
    box[1] = height & _UINT32
    box[2] = 0
    box[3] = 0


@njit(cache=True, nogil=True, inline="always")
def _box_add_run(box, start, length, height):
    """Grow the box by the foreground run [start, start + length), length > 0, in pycocotools' uint32
    arithmetic: a run that crosses a column boundary spans the full height."""
    end = (start + length - 1) & _UINT32
    start &= _UINT32
    x_start = start // height
    x_end = end // height
    box[0] = min(box[0], x_start)
    box[2] = max(box[2], x_end)
    if x_start < x_end:
        box[1] = 0
        box[3] = height - 1
    else:
        box[1] = min(box[1], start % height)
        box[3] = max(box[3], end % height)


@njit(cache=True, nogil=True, inline="always")
def _box_write(box, n_counts, out):
    """out: float64 [4] (x, y, w, h) as pycocotools' rleToBbox: zeros for fewer than 2 counts, and the
    uint32 wrap-around of the empty start when no foreground run is longer than 0."""
    if n_counts < 2:
        out[:] = 0.0
        return
    out[0] = box[0]
    out[1] = box[1]
    out[2] = (box[2] - box[0] + 1) & _UINT32
    out[3] = (box[3] - box[1] + 1) & _UINT32


@njit(cache=True, nogil=True)
def bboxes(counts, offsets, sizes):
    """float64 [n, 4]: (x, y, w, h) of each mask as pycocotools' (2.0.8+) rleToBbox.

    counts uint32 / offsets int64 [n + 1] as in `_rle_codec`; sizes: int64 [n, 2] (h, w). Only foreground
    runs longer than 0 count.
    """
    n_masks = offsets.shape[0] - 1
    out = np.zeros((n_masks, 4), np.float64)
    box = np.empty(4, np.int64)
    for k in range(n_masks):
        height = sizes[k, 0] & _UINT32
        if height == 0:
            continue
        _box_start(box, sizes[k, 1], height)
        position = np.int64(0)
        for j in range(offsets[k + 1] - offsets[k]):
            count = np.int64(counts[offsets[k] + j])
            if j % 2 == 1 and count > 0:
                _box_add_run(box, position, count, height)
            position += count
        _box_write(box, offsets[k + 1] - offsets[k], out[k])
    return out


@njit(cache=True, nogil=True)
def iou_inputs(chars, char_offsets, height, width, mask_bits):
    """Decode compressed RLE strings once into what the IoU matrix needs, in one pass.

    chars: uint8 [C], all strings back to back; char_offsets: int64 [n + 1]; height, width: the masks'
    common size (height > 0). Returns (boxes float64 [n, 4] equal to `bboxes`, areas int64 [n] equal to
    `_rle_ops.areas`, events int64 [E], max_end). Each foreground interval [start, end) (column-major pixel
    positions, empty runs dropped) gives two events: ((2 * end) << mask_bits | mask) and
    ((2 * start + 1) << mask_bits | mask), so bit mask_bits tells starts from ends and the bits above it
    hold the position. max_end: the largest position seen.
    """
    n_masks = char_offsets.shape[0] - 1
    boxes = np.zeros((n_masks, 4), np.float64)
    areas = np.zeros(n_masks, np.int64)
    # every count takes at least one character, and half the counts are foreground
    events = np.empty(chars.shape[0] + 2, np.int64)
    n_events = 0
    max_end = np.int64(0)
    box = np.empty(4, np.int64)
    for k in range(n_masks):
        p = char_offsets[k]
        end = char_offsets[k + 1]
        j = 0
        position = np.int64(0)
        before_last = np.int64(0)  # counts[j - 2] and counts[j - 1], as stored (uint32)
        last = np.int64(0)
        area = np.int64(0)
        _box_start(box, width, height)
        while p < end:
            value, p = read_count(chars, p, end)
            if j > 2:
                value += before_last
            count = value & _UINT32
            before_last = last
            last = count
            if j % 2 == 1 and count > 0:
                area += count
                _box_add_run(box, position, count, height)
                events[n_events] = ((2 * (position + count)) << mask_bits) | k
                events[n_events + 1] = ((2 * position + 1) << mask_bits) | k
                n_events += 2
                max_end = max(max_end, position + count)
            position += count
            j += 1
        areas[k] = area & _UINT32
        _box_write(box, j, boxes[k])
    return boxes, areas, events[:n_events], max_end


@njit(cache=True, nogil=True)
def _radix_sort(packed, low_bit, n_bits):
    """Sort non-negative int64 values by their bits [low_bit, low_bit + n_bits), stable, 11 bits a pass."""
    n = packed.shape[0]
    scratch = np.empty(n, np.int64)
    for digit_shift in range(low_bit, low_bit + n_bits, 11):
        bucket = np.zeros(2049, np.int64)
        for i in range(n):
            bucket[((packed[i] >> digit_shift) & 2047) + 1] += 1
        for d in range(2048):
            bucket[d + 1] += bucket[d]
        for i in range(n):
            digit = (packed[i] >> digit_shift) & 2047
            scratch[bucket[digit]] = packed[i]
            bucket[digit] += 1
        packed, scratch = scratch, packed
    return packed


@njit(cache=True, nogil=True)
def cross_intersections(events, mask_bits, key_bits, n_dt, n_gt):
    """int64 [n_dt, n_gt]: pixels shared by each dt mask (0..n_dt-1) and gt mask (n_dt..), from `iou_inputs`.

    With F_g(p) the pixels of gt mask g before position p, a dt interval [s, e) shares F_g(e) - F_g(s) pixels
    with g. One sweep over the events in position order keeps F_g(p) = base[g] + (p if g is open): a gt
    event only moves base[g] and the open flag, a dt event adds -/+F(p) to its row of the result. F is
    continuous, so events at equal positions may come in any order. uint32 arithmetic is exact modulo 2**32
    and every true intersection is below h * w < 2**32 (checked by the caller); the open flags are 0 /
    all-ones, so a row update has no branch and vectorises.
    """
    ordered = _radix_sort(events, mask_bits + 1, key_bits)
    mask_of = (np.int64(1) << mask_bits) - 1
    base = np.zeros(n_gt, np.uint32)
    open_gt = np.zeros(n_gt, np.uint32)
    shared = np.zeros((n_dt, n_gt), np.uint32)
    for event in ordered:
        k = event & mask_of
        position = event >> (mask_bits + 1)
        opens = (event >> mask_bits) & 1
        if k >= n_dt:
            g = k - n_dt
            base[g] += np.uint32((-position if opens else position) & 0xFFFFFFFF)
            open_gt[g] = np.uint32(0xFFFFFFFF if opens else 0)
            continue
        row = shared[k]
        at = np.uint32(position & 0xFFFFFFFF)
        if opens:
            for g in range(n_gt):
                row[g] -= base[g] + (open_gt[g] & at)
        else:
            for g in range(n_gt):
                row[g] += base[g] + (open_gt[g] & at)
    return shared.astype(np.int64)
