"""The engine's RLE merge equals the dense reference merge on generated candidate sets."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from clipsam.engine.merge import merge_candidates
from clipsam.engine.types import MaskCandidates
from clipsam.kernels import rle as rle_codec
from tests.reference import dense_merge


@st.composite
def candidate_sets(draw):
    height, width = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    count = draw(st.integers(0, 12))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    masks = np.zeros((count, height, width), bool)
    for i in range(count):  # rectangles plus noise: heavy overlaps, duplicates and empty masks all occur
        y0, x0 = rng.integers(0, height), rng.integers(0, width)
        y1, x1 = rng.integers(y0, height + 1), rng.integers(x0, width + 1)
        masks[i, y0:y1, x0:x1] = True
        masks[i] ^= rng.random((height, width)) < 0.05
    if count >= 2 and draw(st.booleans()):
        masks[1] = masks[0]  # an exact duplicate
    scores = np.round(rng.random(count), 1).astype(np.float32)  # ties in score
    return MaskCandidates(
        masks=masks,
        iou=np.ones(count, np.float32),
        class_ids=rng.integers(0, draw(st.integers(1, 3)), count).astype(np.int32),
        scores=scores,
    )


@settings(max_examples=200, deadline=None)
@given(
    cands=candidate_sets(),
    iou_threshold=st.sampled_from([0.0, 0.3, 0.5, 0.8, 1.0]),
    min_region_size=st.sampled_from([0, 1, 5, 30]),
)
def test_rle_merge_equals_dense_reference(cands, iou_threshold, min_region_size):
    fast = merge_candidates(cands, iou_threshold=iou_threshold, min_region_size=min_region_size)
    slow = dense_merge.merge_candidates(cands, iou_threshold=iou_threshold, min_region_size=min_region_size)
    assert [(c, s) for c, s, _ in fast] == [(c, s) for c, s, _ in slow]
    for (_, _, rle), (_, _, mask) in zip(fast, slow, strict=True):
        np.testing.assert_array_equal(rle_codec.decode(rle).astype(bool), mask)
