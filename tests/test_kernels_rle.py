"""clipsam.kernels.rle against pycocotools.mask (byte-identical) and SAM2's mask_to_rle_pytorch (counts)."""

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocotools import mask as coco
from sam2.utils.amg import mask_to_rle_pytorch

from clipsam.kernels import rle


def _patterned(n: int, h: int, w: int, kind: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "zeros":
        return np.zeros((n, h, w), np.uint8)
    if kind == "ones":
        return np.ones((n, h, w), np.uint8)
    if kind == "checker":
        return np.broadcast_to(np.indices((h, w)).sum(0) % 2, (n, h, w)).astype(np.uint8)
    if kind == "boxes":  # long runs: multi-character counts and deltas
        masks = np.zeros((n, h, w), np.uint8)
        for k in range(n):
            y0, x0 = rng.integers(0, h), rng.integers(0, w)
            masks[k, y0 : rng.integers(y0, h + 1), x0 : rng.integers(x0, w + 1)] = 1
        return masks
    return (rng.random((n, h, w)) < rng.random()).astype(np.uint8)


batches = st.builds(
    _patterned,
    n=st.integers(1, 3),
    h=st.integers(1, 13),
    w=st.sampled_from([1, 2, 5, 8, 9, 16, 17]),
    kind=st.sampled_from(["zeros", "ones", "checker", "boxes", "random"]),
    seed=st.integers(0, 1000),
)


def _coco_encode(masks_nhw: np.ndarray) -> list[dict]:
    return coco.encode(np.asfortranarray(masks_nhw.transpose(1, 2, 0).astype(np.uint8)))


@settings(max_examples=150, deadline=None, database=None)
@given(masks=batches, as_bool=st.booleans(), view=st.sampled_from(["c", "fortran", "strided", "single"]))
def test_encode_is_byte_identical_to_pycocotools(masks, as_bool, view):
    expected = _coco_encode(masks)
    data = masks.astype(bool) if as_bool else masks
    assert rle.encode_batch(data) == expected
    if view == "c" and data.flags.f_contiguous:
        # (1, 1, w) is both C- and Fortran-contiguous: documented to be read the pycocotools way
        assert rle.encode(data) == coco.encode(np.asfortranarray(masks))
    elif view == "c":
        assert rle.encode(data) == expected
    elif view == "fortran":
        assert rle.encode(np.asfortranarray(data.transpose(1, 2, 0))) == expected
    elif view == "strided":
        wide = np.repeat(data, 2, axis=2)[:, :, ::2]  # non-contiguous (n, h, w) view
        assert rle.encode(wide) == expected
    else:
        assert rle.encode(data[0]) == expected[0]
        assert rle.encode(np.asfortranarray(data[0])) == expected[0]


@settings(max_examples=80, deadline=None, database=None)
@given(masks=batches)
def test_counts_equal_sam2_mask_to_rle_pytorch(masks):
    counts, offsets = rle.encode_counts(masks.astype(bool))
    expected = mask_to_rle_pytorch(torch.from_numpy(masks.astype(bool)))
    for k, ref in enumerate(expected):
        assert counts[offsets[k] : offsets[k + 1]].tolist() == ref["counts"]


@settings(max_examples=100, deadline=None, database=None)
@given(masks=batches, second=batches, crowd_seed=st.integers(0, 100))
def test_decode_area_bbox_iou_merge_equal_pycocotools(masks, second, crowd_seed):
    ours = rle.encode(masks)
    np.testing.assert_array_equal(rle.decode(ours), coco.decode(ours))
    assert rle.decode(ours).flags.f_contiguous and rle.decode(ours).dtype == np.uint8
    np.testing.assert_array_equal(rle.decode(ours[0]), coco.decode(ours[0]))
    np.testing.assert_array_equal(rle.area(ours), coco.area(ours))
    assert rle.area(ours).dtype == np.uint32 and rle.area(ours[0]) == coco.area(ours[0])
    np.testing.assert_array_equal(rle.toBbox(ours), coco.toBbox(ours))
    np.testing.assert_array_equal(rle.toBbox(ours[0]), coco.toBbox(ours[0]))
    assert rle.merge(ours) == coco.merge(ours)
    assert rle.merge(ours, intersect=1) == coco.merge(ours, intersect=1)
    # second batch: possibly another size (pycocotools gives -1 for overlapping boxes of other sizes)
    gt = rle.encode(second) + ours
    crowd = np.random.default_rng(crowd_seed).integers(0, 2, len(gt)).tolist()
    np.testing.assert_array_equal(rle.iou(ours, gt, crowd), coco.iou(ours, gt, crowd))


def _uncompressed(counts: list[int], height: int, width: int) -> dict:
    """An RLE whose counts are `counts` padded with one last run up to h * w (zero-length runs kept)."""
    return {"size": [height, width], "counts": counts + [height * width - sum(counts)]}


run_lists = st.lists(st.integers(0, 7), max_size=12)


@settings(max_examples=150, deadline=None, database=None)
@given(
    unusual_counts=st.lists(run_lists, min_size=1, max_size=3),
    height=st.integers(1, 7),
    seed=st.integers(0, 100),
)
def test_iou_and_bbox_of_unusual_counts_equal_pycocotools(unusual_counts, height, seed):
    """Zero-length runs (leading, inside, trailing) and runs across columns: the fused IoU decode's boxes.

    IoU pairs an unusual RLE with canonical ones only: pycocotools' run walk stops early where both RLEs
    hold a zero-length run at the same position, a quirk no canonical encoding triggers.
    """
    width = max(1, -(-max(sum(c) for c in unusual_counts) // height))
    unusual = coco.frPyObjects([_uncompressed(c, height, width) for c in unusual_counts], height, width)
    np.testing.assert_array_equal(rle.toBbox(unusual), coco.toBbox(unusual))
    rng = np.random.default_rng(seed)
    canonical = rle.encode_batch(rng.random((4, height, width)) < rng.random((4, 1, 1)))
    crowd = rng.integers(0, 2, len(canonical)).tolist()
    np.testing.assert_array_equal(rle.iou(unusual, canonical, crowd), coco.iou(unusual, canonical, crowd))
    crowd = rng.integers(0, 2, len(unusual)).tolist()
    np.testing.assert_array_equal(rle.iou(canonical, unusual, crowd), coco.iou(canonical, unusual, crowd))


def test_iou_matrix_of_image_size_masks_equals_pycocotools():
    rng = np.random.default_rng(5)
    coarse = rng.random((24, 9, 11)).astype(np.float32)
    fields = np.stack([cv2.resize(c, (330, 250), interpolation=cv2.INTER_CUBIC) for c in coarse])
    masks = fields > rng.uniform(0.4, 0.9, (24, 1, 1))
    masks[3] = False  # an empty mask
    masks[4] = True  # a full one
    rles = rle.encode_batch(masks)
    crowd = rng.integers(0, 2, 10).tolist()
    np.testing.assert_array_equal(rle.iou(rles, rles[:10], crowd), coco.iou(rles, rles[:10], crowd))
    np.testing.assert_array_equal(rle.iou(rles[5:], rles, [0] * 24), coco.iou(rles[5:], rles, [0] * 24))


def test_iou_on_boxes_and_empty_inputs_equal_pycocotools():
    rng = np.random.default_rng(1)
    dt = rng.uniform(0, 50, (7, 4))
    gt = rng.uniform(0, 50, (5, 4))
    crowd = [0, 1, 0, 1, 0]
    np.testing.assert_array_equal(rle.iou(dt, gt, crowd), coco.iou(dt, gt, crowd))
    np.testing.assert_array_equal(
        rle.iou(dt.tolist(), gt.tolist(), crowd), coco.iou(dt.tolist(), gt.tolist(), crowd)
    )
    assert rle.iou([], gt, crowd) == coco.iou([], gt, crowd) == []


def test_full_size_batch_is_byte_identical_and_read_in_place():
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[:480, :640]
    masks = np.stack(
        [(xx - rng.integers(0, 640)) ** 2 + (yy - rng.integers(0, 480)) ** 2 < r * r for r in (5, 90, 400)]
    )
    assert rle.encode(masks) == _coco_encode(masks)
    assert rle.merge(rle.encode(masks)) == coco.merge(_coco_encode(masks))


def test_fr_py_objects_uncompressed_equal_pycocotools():
    masks = _patterned(3, 7, 9, "random", 3).astype(bool)
    uncompressed = mask_to_rle_pytorch(torch.from_numpy(masks))
    assert rle.frPyObjects(uncompressed, 7, 9) == coco.frPyObjects(uncompressed, 7, 9)
    assert rle.frPyObjects(uncompressed[0], 7, 9) == coco.frPyObjects(uncompressed[0], 7, 9)
    as_str = dict(rle.encode(masks[0]), counts=rle.encode(masks[0])["counts"].decode())
    np.testing.assert_array_equal(rle.decode(as_str), masks[0])


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda: rle.encode(np.zeros((3, 3), np.float32)), "bimask"),
        (lambda: rle.encode(np.zeros((2, 2, 3, 3), np.uint8)), "bimask"),
        (lambda: rle.encode([[0, 1]]), "bimask"),
        (lambda: rle.encode_counts(np.zeros((3, 3), np.uint8)), "masks"),
        (lambda: rle.decode([{"size": [2, 2], "counts": b"1"}]), "rleObjs"),  # counts sum 1 != 4
        (lambda: rle.decode([{"size": [2, 2], "counts": [4]}]), "rleObjs"),
        (
            lambda: rle.decode(
                [rle.encode(np.zeros((2, 2), np.uint8)), rle.encode(np.zeros((2, 3), np.uint8))]
            ),
            "rleObjs",
        ),
        (lambda: rle.area({"size": [2, 2]}), "rleObjs"),
        (lambda: rle.iou([], [], [0]), "pyiscrowd"),
        (lambda: rle.iou(np.zeros((2, 3)), np.zeros((2, 4)), [0, 0]), "dt"),
        (lambda: rle.frPyObjects([[0.0, 0.0, 1.0, 1.0, 2.0, 0.0]], 4, 4), "pyobj"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(call, argument):
    with pytest.raises(ValueError, match=argument):
        call()
