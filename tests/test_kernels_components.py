"""connected_components against scipy.ndimage.label (per class) and cc3d (multi-label + statistics)."""

import cc3d
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import ndimage

from clipsam.kernels.components import connected_components

STRUCTURE = {4: ndimage.generate_binary_structure(2, 1), 8: ndimage.generate_binary_structure(2, 2)}


def _first_appearance_order(labels: np.ndarray) -> np.ndarray:
    """Relabel so that components are numbered 1..n in raster order of their first pixel (0 stays 0)."""
    flat = labels.ravel()
    values, first = np.unique(flat, return_index=True)
    keep = values != 0
    order = np.argsort(first[keep])
    mapping = np.zeros(int(flat.max()) + 1 if flat.size else 1, np.int64)
    mapping[values[keep][order]] = np.arange(1, keep.sum() + 1)
    return mapping[labels]


def _scipy_labels(class_map: np.ndarray, connectivity: int, ignore: int | None) -> np.ndarray:
    combined = np.zeros(class_map.shape, np.int64)
    offset = 0
    for class_id in np.unique(class_map):
        if ignore is not None and class_id == ignore:
            continue
        labels, n = ndimage.label(class_map == class_id, structure=STRUCTURE[connectivity])
        combined[labels > 0] = labels[labels > 0] + offset
        offset += n
    return _first_appearance_order(combined)


def _cc3d_labels(class_map: np.ndarray, connectivity: int, ignore: int | None) -> np.ndarray:
    shifted = class_map.astype(np.int64) + 1  # cc3d treats 0 as background
    if ignore is not None:
        shifted[class_map == ignore] = 0
    labels = cc3d.connected_components(shifted, connectivity=connectivity)
    return _first_appearance_order(labels.astype(np.int64))


def _check_stats(comps, class_map: np.ndarray, scores: np.ndarray | None) -> None:
    ys, xs = np.nonzero(np.ones(class_map.shape, bool))  # raster order
    flat = comps.labels.ravel()
    for k in range(comps.count):
        inside = flat == k + 1
        px, py = xs[inside], ys[inside]
        assert comps.class_id[k] == class_map.ravel()[inside][0]
        assert comps.area[k] == inside.sum()
        assert comps.bbox[k].tolist() == [px.min(), py.min(), px.max() + 1, py.max() + 1]
        np.testing.assert_allclose(comps.centroid[k], [px.mean(), py.mean()], rtol=1e-12)
        if scores is None:
            assert comps.score_sum[k] == 0 and comps.score_max[k] == 0
            continue
        values = scores.ravel()[inside]
        np.testing.assert_allclose(comps.score_sum[k], values.astype(np.float64).sum(), rtol=1e-9)
        assert comps.score_max[k] == values.max()
        first = int(np.argmax(values))
        assert comps.score_argmax[k].tolist() == [px[first], py[first]]


class_maps = st.one_of(
    hnp.arrays(
        st.sampled_from([np.uint8, np.int16, np.int32]),
        hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=14),
        elements=st.integers(0, 3),
    ),
    st.builds(lambda n: (np.indices((n, n)).sum(0) % 2).astype(np.uint8), st.integers(1, 9)),  # checkerboard
    st.builds(lambda n: np.eye(n, dtype=np.int32), st.integers(1, 9)),  # single-pixel diagonal
)


@settings(max_examples=150, deadline=None, database=None)
@given(
    class_map=class_maps,
    connectivity=st.sampled_from([4, 8]),
    ignore=st.sampled_from([None, 0, 2]),
    with_scores=st.booleans(),
    view=st.sampled_from(["plain", "transposed", "strided"]),
)
def test_partition_and_stats_equal_scipy_and_cc3d(class_map, connectivity, ignore, with_scores, view):
    if view == "transposed":
        class_map = class_map.T
    elif view == "strided":
        class_map = class_map[::-1, ::2]
    rng = np.random.default_rng(class_map.size)
    # few distinct values so that ties in the max (first-in-raster-order rule) do occur
    scores = rng.integers(0, 4, class_map.shape).astype(np.float32) if with_scores else None
    comps = connected_components(class_map, connectivity, ignore, scores, return_labels=True)
    expected = _scipy_labels(class_map, connectivity, ignore)
    np.testing.assert_array_equal(comps.labels, expected)
    np.testing.assert_array_equal(comps.labels, _cc3d_labels(class_map, connectivity, ignore))
    assert comps.count == expected.max()
    _check_stats(comps, class_map, scores)
    without_labels = connected_components(class_map, connectivity, ignore, scores)
    assert without_labels.labels is None
    np.testing.assert_array_equal(without_labels.area, comps.area)


def test_diagonal_differs_between_4_and_8_connectivity():
    diagonal = np.eye(5, dtype=np.uint8)
    assert connected_components(diagonal, 8, ignore=0).count == 1
    assert connected_components(diagonal, 4, ignore=0).count == 5
    # class 0 on both sides of the line touches diagonally across it only under 8-connectivity
    assert connected_components(diagonal, 8).count == 2
    assert connected_components(diagonal, 4).count == 7


def test_full_size_stats_equal_cc3d_statistics():
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 20, (33, 33)).astype(np.uint8)
    class_map = np.kron(coarse, np.ones((32, 32), np.uint8))[:1000, :1024]
    class_map[rng.random(class_map.shape) < 0.001] = 7  # salt: many one-pixel components
    labels = cc3d.connected_components(class_map.astype(np.int32) + 1, connectivity=8)
    stats = cc3d.statistics(labels)
    comps = connected_components(class_map, return_labels=True)
    order = _first_appearance_order(labels.astype(np.int64))
    np.testing.assert_array_equal(comps.labels, order)
    # cc3d label j maps to our component order[label == j]; compare in cc3d order
    ours_of_cc3d = np.zeros(labels.max() + 1, np.int64)
    ours_of_cc3d[labels.ravel()] = order.ravel()
    ours = ours_of_cc3d[1:] - 1
    np.testing.assert_array_equal(comps.area[ours], stats["voxel_counts"][1:])
    boxes = np.array([[b[1].start, b[0].start, b[1].stop, b[0].stop] for b in stats["bounding_boxes"][1:]])
    np.testing.assert_array_equal(comps.bbox[ours], boxes)
    np.testing.assert_allclose(comps.centroid[ours], stats["centroids"][1:, ::-1], rtol=1e-9)


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"class_map": np.zeros((3, 3), np.float32)}, "class_map"),
        ({"class_map": np.zeros((3, 3), np.int64)}, "class_map"),
        ({"class_map": np.zeros((2, 3, 3), np.uint8)}, "class_map"),
        ({"class_map": [[0, 1]]}, "class_map"),
        ({"class_map": np.zeros((3, 3), np.uint8), "connectivity": 6}, "connectivity"),
        ({"class_map": np.zeros((3, 3), np.uint8), "ignore": 1.5}, "ignore"),
        ({"class_map": np.zeros((3, 3), np.uint8), "scores": np.zeros((3, 4), np.float32)}, "scores"),
        ({"class_map": np.zeros((3, 3), np.uint8), "scores": np.zeros((3, 3), np.float64)}, "scores"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        connected_components(**kwargs)


def test_bool_class_map_and_empty_results():
    mask = np.zeros((4, 6), bool)
    comps = connected_components(mask, ignore=0)
    assert comps.count == 0 and comps.area.shape == (0,) and comps.bbox.shape == (0, 4)
    mask[1:3, 2:5] = True
    comps = connected_components(mask, ignore=0)
    assert comps.count == 1 and comps.bbox.tolist() == [[2, 1, 5, 3]] and comps.class_id.tolist() == [1]
