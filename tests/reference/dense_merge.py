"""Slow reference for engine/merge.py: the merge on dense boolean masks (the first implementation).



Three steps, in this order, all in score order (score descending; equal scores keep candidate order):
1. same-class duplicates: a mask whose IoU with an already kept mask of the same class is > iou_threshold is
   dropped (greedy, so the higher-score mask of a duplicate pair survives). Masks of different classes are
   never duplicates, whatever their IoU.
2. cross-class overlaps: each pixel belongs to the class of the highest-score kept mask covering it; masks of
   other classes lose that pixel. Masks of the same class may still overlap (they passed step 1).
3. dropouts: masks left with fewer than max(min_region_size, 1) pixels are removed. Pixels they lost in step 2
   are not handed back.
"""

from __future__ import annotations

import numpy as np

from clipsam.engine.types import MaskCandidates


def merge_candidates(
    cands: MaskCandidates, *, iou_threshold: float = 0.8, min_region_size: int = 100
) -> list[tuple[int, float, np.ndarray]]:
    """The final instances as (class_id, score, mask bool [H, W] image frame), highest score first.

    cands.masks bool [B, H, W], cands.class_ids int32 [B], cands.scores float32 [B] (see module doc).
    """
    order = np.argsort(-cands.scores.astype(np.float64), kind="stable")
    kept = _drop_duplicates(cands.masks, cands.class_ids, order, iou_threshold)
    exclusive = _resolve_overlaps(cands.masks, cands.class_ids, kept)
    survivors = _drop_small(exclusive, min_region_size)
    return [
        (int(cands.class_ids[i]), float(cands.scores[i]), exclusive[k])
        for k, i in enumerate(kept)
        if survivors[k]
    ]


def _drop_duplicates(
    masks: np.ndarray, class_ids: np.ndarray, order: np.ndarray, iou_threshold: float
) -> list[int]:
    """Greedy same-class dedupe of masks bool [B, H, W] visited in `order`; returns kept indices in order."""
    boxes = [_bounding_box(mask) for mask in masks]
    areas = masks.sum(axis=(1, 2))
    kept: list[int] = []
    for i in order:
        duplicate = any(
            class_ids[j] == class_ids[i] and _iou(masks, boxes, areas, i, j) > iou_threshold for j in kept
        )
        if not duplicate:
            kept.append(int(i))
    return kept


def _resolve_overlaps(masks: np.ndarray, class_ids: np.ndarray, kept: list[int]) -> np.ndarray:
    """Masks bool [K, H, W] of the kept indices, each without the pixels owned by another class.

    A pixel's owner is the class of the first mask (in `kept` order, i.e. highest score) that covers it.
    """
    owner = np.full(masks.shape[1:], -1, dtype=np.int64)  # [H, W] class id, -1 = unclaimed
    exclusive = np.zeros((len(kept),) + masks.shape[1:], dtype=bool)
    for k, i in enumerate(kept):
        mask, class_id = masks[i], int(class_ids[i])
        owner[mask & (owner < 0)] = class_id
        exclusive[k] = mask & (owner == class_id)
    return exclusive


def _drop_small(masks: np.ndarray, min_region_size: int) -> np.ndarray:
    """bool [K]: which masks [K, H, W] keep at least max(min_region_size, 1) pixels."""
    areas = masks.sum(axis=(1, 2))
    return areas >= max(min_region_size, 1)


def _bounding_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(y0, y1, x0, x1) half-open, or None for an empty mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _iou(masks: np.ndarray, boxes: list, areas: np.ndarray, i: int, j: int) -> float:
    """Mask IoU of masks i and j, counting the intersection only where their bounding boxes overlap."""
    box_i, box_j = boxes[i], boxes[j]
    if box_i is None or box_j is None:
        return 0.0
    y0, y1 = max(box_i[0], box_j[0]), min(box_i[1], box_j[1])
    x0, x1 = max(box_i[2], box_j[2]), min(box_i[3], box_j[3])
    if y0 >= y1 or x0 >= x1:
        return 0.0
    intersection = int(np.count_nonzero(masks[i, y0:y1, x0:x1] & masks[j, y0:y1, x0:x1]))
    return intersection / float(areas[i] + areas[j] - intersection)
