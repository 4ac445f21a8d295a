"""Mask-level post-processing of the pipeline: NMS / same-class de-duplication and cross-class overlap
resolution on COCO RLEs (never decoded to dense pixels), and SAM's small-region cleanup on dense masks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ._lazy import LazyModule
from .rle import Rle, _strings, decode_counts

_cleanup = LazyModule("clipsam.kernels._cleanup")  # numba: imported on first call
_rle_ops = LazyModule("clipsam.kernels._rle_ops")  # numba: imported on first call
_rle_sets = LazyModule("clipsam.kernels._rle_sets")  # numba: imported on first call


def _scores_array(scores: Sequence[float] | np.ndarray, n: int) -> np.ndarray:
    values = np.asarray(scores, np.float64)
    if values.shape != (n,):
        raise ValueError(f"scores must hold one value per mask ({n}), got shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("scores must be finite")
    return values


def _best_first(scores: np.ndarray) -> np.ndarray:
    """int64 [n]: indices by descending score, ties to the lower index."""
    return np.lexsort((np.arange(scores.shape[0]), -scores)).astype(np.int64)


def _intervals(rles: Sequence[Rle]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
    counts, offsets, sizes = decode_counts(rles, "rles")
    if len(sizes) and (sizes != sizes[0]).any():
        raise ValueError("rles: all masks must have the same size")
    starts, ends, run_offsets = _rle_ops.intervals(counts, offsets)
    areas = _rle_ops.areas(counts, offsets).astype(np.int64)
    size = (int(sizes[0, 0]), int(sizes[0, 1])) if len(sizes) else (0, 0)
    return starts, ends, run_offsets, areas, size


def dedupe_same_class(
    rles: Sequence[Rle],
    class_ids: Sequence[int] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    iou_threshold: float,
) -> np.ndarray:
    """Greedy mask NMS within each class.

    rles: n COCO RLE dicts of one image size. class_ids: int [n]. scores: float [n] (higher is better).
    A mask is dropped when its mask IoU with a better-scored kept mask of the same class is > iou_threshold.
    Returns int64 [k]: kept indices, best score first (ties: lower index first).
    """
    n = len(rles)
    values = _scores_array(scores, n)
    groups = np.asarray(class_ids, np.int64)
    if groups.shape != (n,):
        raise ValueError(f"class_ids must hold one id per mask ({n}), got shape {groups.shape}")
    if not 0.0 <= float(iou_threshold) <= 1.0:
        raise ValueError(f"iou_threshold must lie in [0, 1], got {iou_threshold}")
    if n == 0:
        return np.zeros(0, np.int64)
    if len({tuple(rle["size"]) for rle in rles}) > 1:
        raise ValueError("rles: all masks must have the same size")
    keep = np.zeros(n, np.bool_)
    for group in np.unique(groups):  # one class at a time: only its masks' runs are decoded at once
        members = np.flatnonzero(groups == group)
        starts, ends, run_offsets, areas, _ = _intervals([rles[i] for i in members])
        same = np.zeros(members.shape[0], np.int64)
        order = _best_first(values[members])  # members ascend, so ties still go to the lower index
        threshold = float(iou_threshold)
        keep[members] = _rle_sets.greedy_nms(starts, ends, run_offsets, areas, same, order, threshold)
    order = _best_first(values)
    return order[keep[order]]


def nms(rles: Sequence[Rle], scores: Sequence[float] | np.ndarray, iou_threshold: float) -> np.ndarray:
    """Class-agnostic mask NMS: `dedupe_same_class` with every mask in one class."""
    return dedupe_same_class(rles, np.zeros(len(rles), np.int64), scores, iou_threshold)


def resolve_overlaps(rles: Sequence[Rle], scores: Sequence[float] | np.ndarray) -> list[Rle]:
    """Give each pixel covered by several masks to the highest-scored one (ties: lower index).

    rles: n COCO RLE dicts of one image size; scores: float [n]. Returns n RLE dicts in input order, each
    the part of its mask no better mask covers (possibly empty).
    """
    n = len(rles)
    values = _scores_array(scores, n)
    if n == 0:
        return []
    starts, ends, run_offsets, _, (height, width) = _intervals(rles)
    counts, offsets = _rle_sets.resolve(starts, ends, run_offsets, _best_first(values), height * width)
    return _strings(counts, offsets, height, width)


def remove_small_regions(mask: np.ndarray, area_thresh: float, mode: str) -> tuple[np.ndarray, bool]:
    """SAM's `remove_small_regions`: fill holes / drop islands smaller than area_thresh (8-connectivity).

    mask: bool (or 0/1 uint8) [H, W]. mode: "holes" or "islands". Returns (cleaned bool [H, W], changed);
    like SAM, the input object itself comes back when nothing was small. In "holes" mode every 0-region
    smaller than area_thresh is filled, border-touching or not; in "islands" mode the largest island is kept
    when all are small.
    """
    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', got {mode!r}")
    if not isinstance(mask, np.ndarray) or mask.ndim != 2:
        raise ValueError(f"mask must be a 2-D numpy array, got {getattr(mask, 'shape', type(mask).__name__)}")
    if mask.dtype == np.bool_:
        mask01 = np.ascontiguousarray(mask).view(np.uint8)
    elif mask.dtype == np.uint8:
        mask01 = (mask != 0).view(np.uint8)
    else:
        raise ValueError(f"mask dtype must be bool or uint8, got {mask.dtype}")
    height, width = mask01.shape
    # whole 8-pixel words let unchanged stretches of a row be skipped 8 pixels at a time
    if width % 8 == 0 and mask01.ctypes.data % 8 == 0:
        words = mask01.view(np.uint64)
    else:
        words = np.empty((height, 0), np.uint64)  # one kernel signature either way
    cleaned, changed = _cleanup.remove_small(mask01, words, mode == "holes", float(area_thresh))
    return (cleaned.view(np.bool_), True) if changed else (mask, False)
