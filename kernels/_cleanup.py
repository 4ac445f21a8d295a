"""Kernel of SAM's `remove_small_regions`: fill small holes or drop small islands of one binary mask."""

import numpy as np
from numba import njit

from ._runs import label_binary_runs


@njit(cache=True, nogil=True)
def _largest(area, block_key):
    """Index of the largest component; ties go to the first in OpenCV's label order.

    OpenCV's default 8-connectivity labeling scans 2x2 blocks, so its labels follow the raster order of
    each component's first 2x2 block rather than of its first pixel.
    """
    best = 0
    for comp in range(1, area.shape[0]):
        if area[comp] > area[best] or (area[comp] == area[best] and block_key[comp] < block_key[best]):
            best = comp
    return best


@njit(cache=True, nogil=True)
def remove_small(mask01, words, fill_holes, area_thresh):
    """(uint8 [H, W] 0/1 cleaned mask, changed) for a uint8 [H, W] 0/1 mask, C-contiguous.

    words: uint64 [H, W / 8] view of mask01, or [H, 0] to read it pixel by pixel (see `label_binary_runs`).
    fill_holes: components of 0-pixels (8-connected) smaller than area_thresh become 1; otherwise
    components of 1-pixels smaller than area_thresh become 0, keeping the largest when all are small.
    When nothing is small the returned mask is an empty (0, 0) placeholder and changed is False.
    """
    width = mask01.shape[1]
    working_value = 0 if fill_holes else 1
    run_row, run_start, run_end, run_comp, n = label_binary_runs(mask01, words, working_value, True)
    area = np.zeros(n, np.int64)
    block_key = np.full(n, np.iinfo(np.int64).max, np.int64)
    blocks_per_row = (width + 1) // 2
    for run in range(run_row.shape[0]):
        comp = run_comp[run]
        area[comp] += run_end[run] - run_start[run]
        key = np.int64(run_row[run] // 2) * blocks_per_row + run_start[run] // 2
        block_key[comp] = min(block_key[comp], key)
    flip = area < area_thresh
    if not flip.any():
        return np.zeros((0, 0), np.uint8), False
    if not fill_holes and flip.all():
        flip[_largest(area, block_key)] = False
    cleaned = mask01.copy()
    for run in range(run_row.shape[0]):
        if flip[run_comp[run]]:
            cleaned[run_row[run], run_start[run] : run_end[run]] = 1 - working_value
    return cleaned, True
