"""Merge semantics on hand-made masks with known outcomes, for the RLE merge of the engine and for the dense
reference it replaced (both must give these answers)."""

from __future__ import annotations

import numpy as np
import pytest

from clipsam.engine import merge as rle_merge
from clipsam.engine.types import MaskCandidates
from clipsam.kernels import rle as rle_codec
from tests.reference import dense_merge

H, W = 20, 30


def _box(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def _cands(masks: list[np.ndarray], class_ids: list[int], scores: list[float]) -> MaskCandidates:
    count = len(masks)
    stacked = np.stack(masks) if masks else np.zeros((0, H, W), bool)
    return MaskCandidates(
        masks=stacked,
        iou=np.ones(count, np.float32),
        class_ids=np.array(class_ids, np.int32),
        scores=np.array(scores, np.float32),
    )


@pytest.fixture(params=["rle", "dense-reference"], autouse=True)
def implementation(request, monkeypatch):
    monkeypatch.setitem(_IMPLEMENTATION, "name", request.param)


_IMPLEMENTATION = {"name": "rle"}


def _merge(cands: MaskCandidates, **kwargs):
    kwargs.setdefault("min_region_size", 1)
    return _run(cands, **kwargs)


def _run(cands: MaskCandidates, **kwargs):
    """(class_id, score, bool [H, W]) triples from the implementation under test."""
    if _IMPLEMENTATION["name"] == "dense-reference":
        return dense_merge.merge_candidates(cands, **kwargs)
    merged = rle_merge.merge_candidates(cands, **kwargs)
    return [(c, s, rle_codec.decode(rle).astype(bool)) for c, s, rle in merged]


def test_same_class_duplicate_keeps_the_higher_score():
    a = _box(0, 10, 0, 10)  # 100 pixels
    b = _box(0, 10, 0, 9)  # IoU with a = 90 / 100 = 0.9
    result = _merge(_cands([b, a], [1, 1], [0.6, 0.7]))
    assert len(result) == 1
    class_id, score, mask = result[0]
    assert class_id == 1 and np.isclose(score, 0.7)
    np.testing.assert_array_equal(mask, a)


def test_iou_threshold_is_strict():
    a = _box(0, 10, 0, 10)
    b = _box(0, 10, 0, 8)  # IoU = 0.8 exactly: not > 0.8, so both stay
    assert len(_merge(_cands([a, b], [1, 1], [0.9, 0.8]), iou_threshold=0.8)) == 2
    assert len(_merge(_cands([a, b], [1, 1], [0.9, 0.8]), iou_threshold=0.79)) == 1


def test_different_classes_with_high_iou_are_both_kept_and_the_overlap_goes_to_the_higher_score():
    a = _box(0, 10, 0, 10)
    b = _box(0, 10, 0, 9)
    result = _merge(_cands([a, b], [1, 2], [0.7, 0.9]))
    assert [r[0] for r in result] == [2, 1]
    np.testing.assert_array_equal(result[0][2], b)
    np.testing.assert_array_equal(result[1][2], _box(0, 10, 9, 10))


def test_overlap_pixels_go_to_the_higher_score_mask():
    left = _box(0, 10, 0, 15)
    right = _box(0, 10, 10, 25)
    result = _merge(_cands([left, right], [1, 2], [0.5, 0.8]))
    assert [(r[0], int(r[2].sum())) for r in result] == [(2, 150), (1, 100)]
    assert not (result[0][2] & result[1][2]).any()
    np.testing.assert_array_equal(result[1][2], _box(0, 10, 0, 10))


def test_equal_scores_give_the_overlap_to_the_earlier_candidate():
    left = _box(0, 10, 0, 15)
    right = _box(0, 10, 10, 25)
    result = _merge(_cands([left, right], [1, 2], [0.8, 0.8]))
    assert [r[0] for r in result] == [1, 2]
    np.testing.assert_array_equal(result[0][2], left)
    np.testing.assert_array_equal(result[1][2], _box(0, 10, 15, 25))


def test_same_class_masks_that_are_not_duplicates_keep_their_overlap():
    a = _box(0, 10, 0, 15)
    b = _box(0, 10, 10, 25)  # IoU 50 / 250
    result = _merge(_cands([a, b], [1, 1], [0.9, 0.8]))
    np.testing.assert_array_equal(result[0][2], a)
    np.testing.assert_array_equal(result[1][2], b)


def test_pixel_owner_is_the_class_of_the_highest_score_mask():
    top = _box(0, 10, 0, 10)  # class 1, highest
    middle = _box(0, 10, 5, 20)  # class 2 loses x 5..9 to class 1
    bottom = _box(0, 10, 8, 12)  # class 1 again: keeps x 8..9 (owned by class 1), loses x 10..11 to class 2
    result = _merge(_cands([top, middle, bottom], [1, 2, 1], [0.9, 0.8, 0.7]))
    np.testing.assert_array_equal(result[1][2], _box(0, 10, 10, 20))
    np.testing.assert_array_equal(result[2][2], _box(0, 10, 8, 10))


def test_masks_left_too_small_drop_out():
    big = _box(0, 20, 0, 20)  # 400 pixels
    partly_covered = _box(0, 20, 15, 30)  # 300 pixels, 100 of them taken by `big`: 200 left
    mostly_covered = _box(10, 20, 10, 22)  # 120 pixels, 100 taken by `big`: 20 left
    cands = _cands([big, partly_covered, mostly_covered], [1, 2, 3], [0.9, 0.8, 0.7])
    result = _run(cands, min_region_size=100)
    assert [(r[0], int(r[2].sum())) for r in result] == [(1, 400), (2, 200)]
    small_alone = _cands([_box(0, 5, 0, 5)], [1], [0.9])  # 25 pixels
    assert _run(small_alone, min_region_size=25) != []
    assert _run(small_alone, min_region_size=26) == []


def test_empty_masks_always_drop_out():
    empty = np.zeros((H, W), bool)
    result = _run(_cands([empty, _box(0, 2, 0, 2)], [1, 1], [0.9, 0.5]), min_region_size=0)
    assert [r[1] for r in result] == [np.float32(0.5)]


def test_duplicate_check_uses_the_original_masks():
    # b duplicates a (same class) even though a cross-class winner c would cut a down first.
    a = _box(0, 10, 0, 10)
    b = _box(0, 10, 0, 10)
    c = _box(0, 10, 0, 5)
    result = _merge(_cands([c, a, b], [2, 1, 1], [0.95, 0.9, 0.85]))
    assert [r[0] for r in result] == [2, 1]


def test_no_candidates_give_no_instances():
    assert _run(_cands([], [], [])) == []
