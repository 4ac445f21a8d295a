"""Merging SAM2's per-prompt masks into the final instances, on COCO RLEs (numba kernels, never dense).

Three steps, in this order, all in score order (score descending; equal scores keep candidate order):
1. same-class duplicates: a mask whose IoU with an already kept mask of the same class is > iou_threshold is
   dropped (greedy, so the higher-score mask of a duplicate pair survives). Masks of different classes are
   never duplicates, whatever their IoU.
2. cross-class overlaps: each pixel belongs to the class of the highest-score kept mask covering it; masks of
   other classes lose that pixel. Masks of the same class may still overlap (they passed step 1).
3. dropouts: masks left with fewer than max(min_region_size, 1) pixels are removed. Pixels they lost in step 2
   are not handed back.
tests/reference/dense_merge.py does the same on dense masks; tests/test_merge_rle.py checks they agree.
"""

from __future__ import annotations

import numpy as np

from clipsam.engine.types import MaskCandidates
from clipsam.kernels import masks as mask_ops
from clipsam.kernels import rle as rle_codec

Rle = dict
ENCODE_BATCH = 64  # masks per encode call


def merge_candidates(
    cands: MaskCandidates, *, iou_threshold: float = 0.8, min_region_size: int = 100
) -> list[tuple[int, float, Rle]]:
    """The final instances as (class_id, score, COCO RLE with bytes counts), highest score first.

    cands.masks bool [B, H, W] image frame, cands.class_ids int32 [B], cands.scores float32 [B].
    """
    if len(cands) == 0:
        return []
    masks = np.ascontiguousarray(cands.masks).view(np.uint8)
    rles = [  # in batches: the encoder's scratch grows with the batch's run count
        rle
        for start in range(0, len(cands), ENCODE_BATCH)
        for rle in rle_codec.encode_batch(masks[start : start + ENCODE_BATCH])
    ]
    return merge_rles(
        rles, cands.class_ids, cands.scores, iou_threshold=iou_threshold, min_region_size=min_region_size
    )


def merge_rles(
    rles: list[Rle],
    class_ids: np.ndarray,
    scores: np.ndarray,
    *,
    iou_threshold: float = 0.8,
    min_region_size: int = 100,
) -> list[tuple[int, float, Rle]]:
    """`merge_candidates` on masks already encoded: rles (B COCO RLEs, bytes counts), class_ids int32 [B],
    scores float32 [B]. Also the entry point of RleCandidates (MaskStage.decode)."""
    if len(rles) == 0:
        return []
    kept = mask_ops.dedupe_same_class(rles, class_ids, scores, iou_threshold)  # best first
    kept_rles = [rles[i] for i in kept]
    exclusive = _resolve_cross_class(kept_rles, class_ids[kept])
    areas = rle_codec.area(exclusive) if exclusive else np.zeros(0)
    minimum = max(min_region_size, 1)
    return [
        (int(class_ids[i]), float(scores[i]), exclusive[k]) for k, i in enumerate(kept) if areas[k] >= minimum
    ]


def _resolve_cross_class(rles_best_first: list[Rle], class_ids: np.ndarray) -> list[Rle]:
    """Each mask ∩ (pixels whose best covering mask has the mask's class).

    The kernel's resolve_overlaps gives every pixel to its single best mask; the union of those exclusive
    parts over one class is the set of pixels that class wins.
    """
    if len(rles_best_first) <= 1:
        return list(rles_best_first)
    order_scores = -np.arange(len(rles_best_first), dtype=np.float64)  # already best first; ties impossible
    exclusive = mask_ops.resolve_overlaps(rles_best_first, order_scores)
    won_by_class = {
        int(c): rle_codec.merge([exclusive[k] for k in np.flatnonzero(class_ids == c)], intersect=False)
        for c in np.unique(class_ids)
    }
    return [
        rle_codec.merge([rle, won_by_class[int(c)]], intersect=True) if _has_rivals(class_ids, c) else rle
        for rle, c in zip(rles_best_first, class_ids, strict=True)
    ]


def _has_rivals(class_ids: np.ndarray, class_id: int) -> bool:
    """Whether any mask of another class exists (else nothing can take pixels from this class)."""
    return bool((class_ids != class_id).any())
