"""Prompt extraction on synthetic dense maps whose answers are known by construction."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from clipsam.engine.errors import ClipsamError
from clipsam.engine.prompts import extract_prompts
from clipsam.engine.types import DenseMap, Prompts


def _dense(pred: np.ndarray, prob: np.ndarray | float, num_classes: int = 3) -> DenseMap:
    """A DenseMap whose predicted class has probability `prob`; the other classes share the remainder."""
    prob = np.broadcast_to(np.asarray(prob, np.float32), pred.shape)
    rest = (1.0 - prob) / (num_classes - 1)
    probs = np.repeat(rest[None], num_classes, axis=0).astype(np.float32)
    np.put_along_axis(probs, pred[None].astype(np.intp), prob[None], axis=0)
    names = tuple(f"class{i}" for i in range(num_classes))
    return DenseMap(probs=probs, pred=pred.astype(np.int32), class_names=names)


def _extract(dense: DenseMap, **kwargs) -> Prompts:
    kwargs.setdefault("min_confidence", 0.5)
    kwargs.setdefault("min_region_size", 1)
    kwargs.setdefault("skip_classes", (0,))
    return extract_prompts(dense, **kwargs)


def _points(prompts: Prompts) -> list[tuple[int, int]]:
    return [(int(x), int(y)) for x, y in prompts.coords[:, 0]]


def test_solid_square_uses_rounded_centroid():
    pred = np.zeros((20, 20), np.int32)
    pred[3:7, 2:6] = 1  # x 2..5 and y 3..6: centroid (3.5, 4.5) rounds half-up to (4, 5)
    prompts = _extract(_dense(pred, 0.9))
    assert _points(prompts) == [(4, 5)]
    np.testing.assert_array_equal(prompts.boxes, [[2, 3, 6, 7]])
    np.testing.assert_array_equal(prompts.areas, [16])
    np.testing.assert_array_equal(prompts.class_ids, [1])
    np.testing.assert_allclose(prompts.scores, [0.9])
    np.testing.assert_array_equal(prompts.labels, [[1]])
    assert prompts.coords.dtype == np.float32 and prompts.coords.shape == (1, 1, 2)


def test_ring_point_falls_back_to_most_probable_pixel():
    pred = np.zeros((21, 21), np.int32)
    pred[3:18, 3:18] = 2
    pred[6:15, 6:15] = 0  # a square ring; its centroid (10, 10) is background
    prob = np.full(pred.shape, 0.8, np.float32)
    prob[16, 9] = 0.95
    prompts = _extract(_dense(pred, prob))
    assert _points(prompts) == [(9, 16)]
    np.testing.assert_array_equal(prompts.boxes, [[3, 3, 18, 18]])
    np.testing.assert_array_equal(prompts.areas, [15 * 15 - 9 * 9])


def test_ring_with_flat_probabilities_takes_first_pixel_in_raster_order():
    pred = np.zeros((21, 21), np.int32)
    pred[3:18, 3:18] = 2
    pred[6:15, 6:15] = 0
    assert _points(_extract(_dense(pred, 0.8))) == [(3, 3)]


def test_c_shape_point_lies_inside():
    pred = np.zeros((20, 20), np.int32)
    pred[2:18, 2:6] = 1  # the spine
    pred[2:6, 2:18] = 1  # top arm
    pred[14:18, 2:18] = 1  # bottom arm; the centroid sits in the open middle
    prob = np.full(pred.shape, 0.8, np.float32)
    prob[15, 12] = 0.9
    prompts = _extract(_dense(pred, prob))
    assert pred[10, 8] == 0  # where the centroid would be
    assert _points(prompts) == [(12, 15)]


def test_diagonal_neighbours_are_one_region():
    pred = np.zeros((10, 10), np.int32)
    pred[2:4, 2:4] = 1
    pred[4:6, 4:6] = 1  # touches the first square only at a corner
    prompts = _extract(_dense(pred, 0.9))
    np.testing.assert_array_equal(prompts.areas, [8])
    np.testing.assert_array_equal(prompts.boxes, [[2, 2, 6, 6]])


def test_adjacent_classes_are_separate_regions():
    pred = np.zeros((10, 10), np.int32)
    pred[2:8, 2:5] = 1
    pred[2:8, 5:8] = 2
    prompts = _extract(_dense(pred, 0.9))
    assert sorted(prompts.class_ids.tolist()) == [1, 2]
    np.testing.assert_array_equal(prompts.areas, [18, 18])


def test_regions_below_min_region_size_are_dropped():
    pred = np.zeros((40, 40), np.int32)
    pred[0:10, 0:10] = 1  # 100 pixels: kept at the default 100
    pred[20:29, 20:31] = 1  # 99 pixels: dropped
    prompts = _extract(_dense(pred, 0.9), min_region_size=100)
    np.testing.assert_array_equal(prompts.areas, [100])
    np.testing.assert_array_equal(prompts.boxes, [[0, 0, 10, 10]])


def test_confidence_is_the_mean_class_probability_and_the_bound_is_inclusive():
    pred = np.zeros((10, 10), np.int32)
    pred[0:4, 0:4] = 1
    prob = np.full(pred.shape, 0.5, np.float32)
    prob[0:2, 0:4] = 0.875  # mean over the region: (0.5 + 0.875) / 2 = 0.6875, exact in binary
    dense = _dense(pred, prob)
    np.testing.assert_array_equal(_extract(dense, min_confidence=0.6875).scores, [0.6875])
    assert len(_extract(dense, min_confidence=0.6876)) == 0


def test_order_and_max_prompts():
    pred = np.zeros((30, 60), np.int32)
    prob = np.zeros(pred.shape, np.float32)
    layout = [  # (x0, width, class, confidence)
        (0, 4, 1, 0.80),
        (10, 4, 2, 0.90),
        (20, 4, 1, 0.85),
        (30, 2, 2, 0.85),  # same confidence as the one before, smaller: after it
        (40, 4, 1, 0.85),  # same confidence and area as x0=20, later in raster order: after it
    ]
    for x0, w, cls, conf in layout:
        pred[5:9, x0 : x0 + w] = cls
        prob[5:9, x0 : x0 + w] = conf
    prob[pred == 0] = 0.9
    dense = _dense(pred, prob)
    prompts = _extract(dense)
    assert [int(b[0]) for b in prompts.boxes] == [10, 20, 40, 30, 0]
    np.testing.assert_allclose(prompts.scores, [0.9, 0.85, 0.85, 0.85, 0.8])
    top2 = _extract(dense, max_prompts=2)
    assert [int(b[0]) for b in top2.boxes] == [10, 20]
    assert len(_extract(dense, max_prompts=0)) == 0


def test_skip_classes_and_background():
    pred = np.zeros((10, 10), np.int32)
    pred[2:5, 2:5] = 1
    pred[6:9, 6:9] = 2
    dense = _dense(pred, 0.9)
    assert _extract(dense, skip_classes=(0, 2)).class_ids.tolist() == [1]
    with_background = _extract(dense, skip_classes=())
    assert 0 in with_background.class_ids.tolist()


def test_empty_results_have_the_empty_shapes():
    dense = _dense(np.zeros((12, 12), np.int32), 0.9)
    for prompts in (_extract(dense), _extract(dense, skip_classes=(), min_confidence=0.95)):
        assert len(prompts) == 0
        assert prompts.coords.shape == (0, 1, 2) and prompts.boxes.shape == (0, 4)


@pytest.mark.parametrize(
    "kwargs",
    [{"min_confidence": 1.5}, {"min_confidence": -0.1}, {"min_region_size": -1}, {"max_prompts": -2}],
)
def test_out_of_range_arguments_fail_clearly(kwargs):
    with pytest.raises(ClipsamError, match="must be"):
        extract_prompts(_dense(np.zeros((4, 4), np.int32), 0.9), **kwargs)


@pytest.mark.parametrize("seed", range(5))
def test_random_maps_agree_with_a_brute_force_count(seed):
    rng = np.random.default_rng(seed)
    # Blocky random classes so there are rings, holes and odd shapes of every size.
    pred = np.kron(rng.integers(0, 4, (8, 10)), np.ones((3, 3), np.int64))[:23, :29]
    prob = rng.uniform(0.3, 1.0, pred.shape).astype(np.float32)
    dense = _dense(pred, prob, num_classes=4)
    prompts = _extract(dense, min_confidence=0.0, skip_classes=())

    expected = []
    for cls in range(4):
        labels, count = ndimage.label(pred == cls, structure=np.ones((3, 3)))
        for region in range(1, count + 1):
            mask = labels == region
            expected.append((cls, int(mask.sum()), mask))
    assert len(prompts) == len(expected)
    assert np.all(np.diff(prompts.scores) <= 0)
    rows = zip(_points(prompts), prompts.class_ids, prompts.areas, prompts.scores, strict=True)
    for (x, y), cls, area, score in rows:
        labels, _ = ndimage.label(pred == cls, structure=np.ones((3, 3)))
        mask = labels == labels[y, x]
        assert pred[y, x] == cls and mask.sum() == area
        np.testing.assert_allclose(score, dense.probs[cls][mask].astype(np.float64).mean(), rtol=1e-6)
