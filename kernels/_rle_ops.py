"""RLE measurements and set operations on flat counts (see `_rle_codec` for the batch layout).

area / merge follow pycocotools' maskApi.c definitions step for step, so that even unusual inputs (a
zero-length run inside the counts) give the same answer (bbox: `_rle_sets.bboxes`, as pycocotools 2.0.11).
IoU instead works on foreground intervals [start, end) in column-major pixel positions: a pair only walks
the intervals inside the window where both masks can overlap, which is what makes the IoU matrix cheap.
"""

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def areas(counts, offsets):
    """uint32 [n]: foreground pixels per mask (the sum of the odd-indexed counts)."""
    n_masks = offsets.shape[0] - 1
    out = np.zeros(n_masks, np.uint32)
    for k in range(n_masks):
        total = np.int64(0)
        for i in range(offsets[k] + 1, offsets[k + 1], 2):
            total += counts[i]
        out[k] = np.uint32(total & 0xFFFFFFFF)
    return out


@njit(cache=True, nogil=True)
def merge(counts, offsets, total, intersect):
    """Union (or intersection) of n masks of equal size, with pycocotools' rleMerge run walk.

    Returns the merged counts uint32 [m]. For n == 1 the counts come back unchanged.
    """
    n_masks = offsets.shape[0] - 1
    merged = counts[offsets[0] : offsets[1]].astype(np.int64)
    for k in range(1, n_masks):
        other = counts[offsets[k] : offsets[k + 1]]
        out = np.empty(total + 1, np.int64)
        m = 0
        a = 1
        b = 1
        left_run = merged[0]
        right_run = np.int64(other[0])
        left_value = False
        right_value = False
        value = False
        pending = np.int64(0)
        remaining = 1
        while remaining > 0:
            step = min(left_run, right_run)
            pending += step
            remaining = 0
            left_run -= step
            if left_run == 0 and a < merged.shape[0]:
                left_run = merged[a]
                a += 1
                left_value = not left_value
            remaining += left_run
            right_run -= step
            if right_run == 0 and b < other.shape[0]:
                right_run = other[b]
                b += 1
                right_value = not right_value
            remaining += right_run
            previous = value
            value = (left_value and right_value) if intersect else (left_value or right_value)
            if value != previous or remaining == 0:
                out[m] = pending
                m += 1
                pending = 0
        merged = out[:m].copy()
    return merged.astype(np.uint32)


@njit(cache=True, nogil=True)
def intervals(counts, offsets):
    """Foreground intervals of each mask: (starts int64 [R], ends int64 [R], interval offsets int64 [n + 1]).

    Positions are column-major pixel indices; empty runs are dropped, so intervals are sorted and disjoint.
    """
    n_masks = offsets.shape[0] - 1
    capacity = max(1, counts.shape[0] // 2 + 1)
    starts = np.empty(capacity, np.int64)
    ends = np.empty(capacity, np.int64)
    run_offsets = np.zeros(n_masks + 1, np.int64)
    r = 0
    for k in range(n_masks):
        position = np.int64(0)
        for i in range(offsets[k], offsets[k + 1]):
            length = np.int64(counts[i])
            if (i - offsets[k]) % 2 == 1 and length > 0:
                starts[r] = position
                ends[r] = position + length
                r += 1
            position += length
        run_offsets[k + 1] = r
    return starts[:r], ends[:r], run_offsets


@njit(cache=True, nogil=True)
def intersection(starts, ends, run_offsets, a, b):
    """Pixels in both mask a and mask b, walking only the window where both have intervals."""
    a0, a1 = run_offsets[a], run_offsets[a + 1]
    b0, b1 = run_offsets[b], run_offsets[b + 1]
    if a0 == a1 or b0 == b1:
        return np.int64(0)
    low = max(starts[a0], starts[b0])
    high = min(ends[a1 - 1], ends[b1 - 1])
    if low >= high:
        return np.int64(0)
    i = a0 + np.searchsorted(ends[a0:a1], low, side="right")
    j = b0 + np.searchsorted(ends[b0:b1], low, side="right")
    total = np.int64(0)
    while i < a1 and j < b1:
        start = max(starts[i], starts[j])
        if start >= high:
            break
        end = min(ends[i], ends[j])
        if end > start:
            total += end - start
        if ends[i] < ends[j]:
            i += 1
        else:
            j += 1
    return total


@njit(cache=True, nogil=True)
def iou_matrix(starts, ends, run_offsets, boxes, areas_, sizes, n_dt, iscrowd, shared):
    """float64 [n_dt, n_gt] with pycocotools' rleIou semantics; masks 0..n_dt-1 are dt, the rest gt.

    boxes: float64 [n, 4] pycocotools boxes (the box test decides which pairs are compared at all, as there);
    areas_: int64 [n]; sizes: int64 [n, 2] (h, w); iscrowd: bool [n_gt] (union := dt area when crowd).
    Pairs whose boxes overlap but whose sizes differ get -1, as in pycocotools.
    shared: int64 [n_dt, n_gt] intersections from `_rle_sets.cross_intersections` when all sizes are equal,
    or an empty [0, 0] array to walk each compared pair instead.
    """
    n_gt = boxes.shape[0] - n_dt
    out = np.zeros((n_dt, n_gt), np.float64)
    have_shared = shared.shape[0] == n_dt and shared.shape[1] == n_gt
    for g in range(n_gt):
        gi = n_dt + g
        for d in range(n_dt):
            overlap_w = min(boxes[d, 0] + boxes[d, 2], boxes[gi, 0] + boxes[gi, 2]) - max(
                boxes[d, 0], boxes[gi, 0]
            )
            if overlap_w <= 0:
                continue
            overlap_h = min(boxes[d, 1] + boxes[d, 3], boxes[gi, 1] + boxes[gi, 3]) - max(
                boxes[d, 1], boxes[gi, 1]
            )
            if overlap_h <= 0:
                continue
            if sizes[d, 0] != sizes[gi, 0] or sizes[d, 1] != sizes[gi, 1]:
                out[d, g] = -1.0
                continue
            inter = shared[d, g] if have_shared else intersection(starts, ends, run_offsets, d, gi)
            if inter == 0:
                continue
            union = areas_[d] if iscrowd[g] else areas_[d] + areas_[gi] - inter
            out[d, g] = inter / union
    return out
