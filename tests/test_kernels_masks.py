"""Mask de-duplication, overlap resolution and SAM's small-region cleanup against dense references."""

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocotools import mask as coco
from sam2.utils.amg import remove_small_regions as sam_remove_small_regions

from clipsam.kernels import masks, rle


def _blob_masks(n: int, h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.zeros((n, h, w), np.uint8)
    for k in range(n):
        if rng.random() < 0.15:
            continue  # empty masks happen
        for _ in range(rng.integers(1, 3)):
            y0, x0 = rng.integers(0, h), rng.integers(0, w)
            out[k, y0 : rng.integers(y0, h + 1), x0 : rng.integers(x0, w + 1)] = 1
    if n > 1 and rng.random() < 0.3:
        out[-1] = out[0]  # exact duplicates
    return out


def _reference_greedy(rles, class_ids, scores, threshold):
    order = sorted(range(len(rles)), key=lambda i: (-scores[i], i))
    kept = []
    for i in order:
        same = [j for j in kept if class_ids[j] == class_ids[i]]
        if same and (coco.iou([rles[i]], [rles[j] for j in same], [0] * len(same)) > threshold).any():
            continue
        kept.append(i)
    return kept


mask_sets = st.builds(
    _blob_masks, n=st.integers(1, 7), h=st.integers(1, 12), w=st.integers(1, 12), seed=st.integers(0, 10_000)
)


@settings(max_examples=120, deadline=None, database=None)
@given(batch=mask_sets, seed=st.integers(0, 100), threshold=st.sampled_from([0.0, 0.3, 0.5, 0.9]))
def test_dedupe_same_class_equals_greedy_reference(batch, seed, threshold):
    rng = np.random.default_rng(seed)
    rles = rle.encode_batch(batch)
    class_ids = rng.integers(0, 2, len(rles)).tolist()
    scores = rng.integers(0, 3, len(rles)).astype(float).tolist()  # ties included
    expected = _reference_greedy(rles, class_ids, scores, threshold)
    assert masks.dedupe_same_class(rles, class_ids, scores, threshold).tolist() == expected
    assert masks.nms(rles, scores, threshold).tolist() == _reference_greedy(
        rles, [0] * len(rles), scores, threshold
    )


@settings(max_examples=120, deadline=None, database=None)
@given(batch=mask_sets, seed=st.integers(0, 100))
def test_resolve_overlaps_equals_dense_argmax(batch, seed):
    scores = np.random.default_rng(seed).integers(0, 3, len(batch)).astype(np.float64)
    order = np.lexsort((np.arange(len(batch)), -scores))
    owner = np.full(batch.shape[1:], -1)
    for k in order[::-1]:  # best mask painted last
        owner[batch[k] != 0] = k
    expected = np.stack([owner == k for k in range(len(batch))]).astype(np.uint8)
    resolved = masks.resolve_overlaps(rle.encode_batch(batch), scores)
    assert resolved == coco.encode(np.asfortranarray(expected.transpose(1, 2, 0)))


small_masks = st.builds(
    lambda h, w, p, seed: np.random.default_rng(seed).random((h, w)) < p,
    h=st.integers(1, 14),
    w=st.one_of(st.integers(1, 14), st.sampled_from([16, 24, 32])),  # multiples of 8: the word path
    p=st.sampled_from([0.0, 0.2, 0.5, 0.8, 1.0]),
    seed=st.integers(0, 10_000),
)


@settings(max_examples=200, deadline=None, database=None)
@given(
    mask=small_masks,
    area=st.sampled_from([0, 1, 2, 3.5, 5, 20, 1000]),
    mode=st.sampled_from(["holes", "islands"]),
)
def test_remove_small_regions_equals_sam(mask, area, mode):
    expected, expected_changed = sam_remove_small_regions(mask, area, mode)
    cleaned, changed = masks.remove_small_regions(mask, area, mode)
    assert changed == expected_changed
    np.testing.assert_array_equal(cleaned, expected)
    assert cleaned.dtype == np.bool_
    if not changed:
        assert cleaned is mask  # SAM hands the input back untouched
    as_uint8, _ = masks.remove_small_regions(mask.astype(np.uint8), area, mode)
    np.testing.assert_array_equal(as_uint8, expected)


def test_remove_small_regions_full_size_equals_sam():
    rng = np.random.default_rng(4)
    noise = cv2.resize(rng.random((64, 64)).astype(np.float32), (1024, 1024), interpolation=cv2.INTER_CUBIC)
    mask = (noise > 0.5) ^ (rng.random((1024, 1024)) < 0.002)
    for mode in ("holes", "islands"):
        cleaned, changed = masks.remove_small_regions(mask[:, :1000], 100, mode)
        expected, expected_changed = sam_remove_small_regions(mask[:, :1000], 100, mode)
        assert changed and expected_changed
        np.testing.assert_array_equal(cleaned, expected)


def test_remove_small_regions_word_path_on_unaligned_and_empty_masks():
    rng = np.random.default_rng(7)
    buffer = rng.random(1 + 40 * 64) < 0.7
    unaligned = buffer[1:].reshape(40, 64)  # rows of whole words, but not 8-byte aligned
    assert unaligned.ctypes.data % 8 != 0
    for mode in ("holes", "islands"):
        cleaned, changed = masks.remove_small_regions(unaligned, 6, mode)
        expected, expected_changed = sam_remove_small_regions(unaligned, 6, mode)
        assert changed == expected_changed
        np.testing.assert_array_equal(cleaned, expected)
    empty = np.zeros((3, 0), bool)
    cleaned, changed = masks.remove_small_regions(empty, 6, "holes")
    assert cleaned is empty and not changed


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda: masks.remove_small_regions(np.zeros((3, 3), bool), 5, "gaps"), "mode"),
        (lambda: masks.remove_small_regions(np.zeros((3, 3), np.float32), 5, "holes"), "mask"),
        (lambda: masks.remove_small_regions(np.zeros((2, 3, 3), bool), 5, "holes"), "mask"),
        (lambda: masks.dedupe_same_class([], [], [0.5], 0.5), "scores"),
        (
            lambda: masks.dedupe_same_class(rle.encode_batch(np.zeros((1, 2, 2), bool)), [0, 1], [0.5], 0.5),
            "class_ids",
        ),
        (
            lambda: masks.dedupe_same_class(rle.encode_batch(np.zeros((1, 2, 2), bool)), [0], [0.5], 1.5),
            "iou_threshold",
        ),
        (
            lambda: masks.dedupe_same_class(
                [rle.encode(np.zeros((2, 2), bool)), rle.encode(np.zeros((3, 2), bool))], [0, 1], [1, 2], 0.5
            ),
            "rles",
        ),
        (lambda: masks.resolve_overlaps(rle.encode_batch(np.zeros((1, 2, 2), bool)), [np.nan]), "scores"),
        (
            lambda: masks.resolve_overlaps(
                [rle.encode(np.zeros((2, 2), bool)), rle.encode(np.zeros((3, 2), bool))], [1, 2]
            ),
            "rles",
        ),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(call, argument):
    with pytest.raises(ValueError, match=argument):
        call()
