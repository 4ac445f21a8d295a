"""The kernel-based prompt extraction equals the reference written from the definition, on generated maps."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clipsam.engine.prompts import extract_prompts
from clipsam.engine.types import DenseMap
from tests.reference import scipy_prompts


@st.composite
def dense_maps(draw):
    height = draw(st.integers(1, 40))
    width = draw(st.integers(1, 40))
    classes = draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    # Blocky class maps (upsampled noise) give rings, holes, diagonal touches and single pixels.
    block = draw(st.integers(1, 6))
    coarse = rng.integers(0, classes, (height // block + 1, width // block + 1))
    pred = np.kron(coarse, np.ones((block, block), np.int64))[:height, :width]
    flip = rng.random((height, width)) < 0.1
    pred = np.where(flip, rng.integers(0, classes, (height, width)), pred).astype(np.int32)
    probs = rng.random((classes, height, width)).astype(np.float32)
    probs = np.round(probs * 8) / 8  # ties in the peak pixel
    return DenseMap(probs=probs, pred=pred, class_names=tuple(f"c{i}" for i in range(classes)))


def _assert_kernel_equals_reference(dense, min_confidence, min_region_size, max_prompts, skip_background):
    """extract_prompts and the scipy reference give the same prompts for one set of options."""
    kwargs = dict(
        min_confidence=min_confidence,
        min_region_size=min_region_size,
        max_prompts=max_prompts,
        skip_classes=(0,) if skip_background else (),
    )
    _assert_same_prompts(extract_prompts(dense, **kwargs), scipy_prompts.extract_prompts(dense, **kwargs))


@settings(max_examples=150, deadline=None)
@given(
    dense=dense_maps(),
    min_confidence=st.sampled_from([0.0, 0.3, 0.5]),
    min_region_size=st.sampled_from([0, 1, 3, 10]),
    max_prompts=st.sampled_from([None, 1, 5]),
    skip_background=st.booleans(),
)
def test_kernel_prompts_equal_scipy_reference(
    dense, min_confidence, min_region_size, max_prompts, skip_background
):
    _assert_kernel_equals_reference(dense, min_confidence, min_region_size, max_prompts, skip_background)


def _assert_same_prompts(fast, slow):
    for field in ("coords", "labels", "class_ids", "boxes", "areas"):
        np.testing.assert_array_equal(getattr(fast, field), getattr(slow, field), err_msg=field)
        assert getattr(fast, field).dtype == getattr(slow, field).dtype, field
    np.testing.assert_allclose(fast.scores, slow.scores, rtol=1e-6)


def _square_ring(size: int, thickness: int) -> np.ndarray:
    shape = np.ones((size, size), bool)
    shape[thickness : size - thickness, thickness : size - thickness] = False
    return shape


@st.composite
def shape_masks(draw):
    """bool [h, w] shapes whose centroid often lies off the shape: rings, C-shapes, rings around a dot."""
    kind = draw(st.sampled_from(["ring", "c_shape", "ring_with_dot", "block", "diagonal"]))
    thickness = draw(st.integers(1, 2))
    size = draw(st.integers(2 * thickness + 3, 14))
    if kind == "block":
        return np.ones((draw(st.integers(1, 6)), draw(st.integers(1, 6))), bool)
    if kind == "diagonal":  # pixels touching only at corners: one 8-connected region
        return np.eye(size, dtype=bool)
    shape = _square_ring(size, thickness)
    if kind == "c_shape":
        gap = draw(st.integers(1, size - 2 * thickness))
        start = thickness + draw(st.integers(0, size - 2 * thickness - gap))
        shape[start : start + gap, size - thickness :] = False
    if kind == "ring_with_dot":  # the dot is the class of the ring but another region
        shape[size // 2, size // 2] = True
    return shape


@st.composite
def shape_maps(draw):
    """Dense maps painted with shapes; probabilities flat (every region ties), coarse (peak ties) or noisy."""
    height, width = draw(st.integers(5, 36)), draw(st.integers(5, 36))
    classes = draw(st.integers(2, 4))
    pred = np.zeros((height, width), np.int32)
    shapes = draw(st.lists(shape_masks(), min_size=1, max_size=5))
    if draw(st.booleans()):  # the same shape twice: equal areas, so ties go to area and raster position
        shapes.append(shapes[0])
    for shape in shapes:
        y0, x0 = draw(st.integers(-3, height - 1)), draw(st.integers(-3, width - 1))
        class_id = draw(st.integers(1, classes - 1))
        ys, xs = np.nonzero(shape)
        ys, xs = ys + y0, xs + x0
        inside = (ys >= 0) & (ys < height) & (xs >= 0) & (xs < width)
        pred[ys[inside], xs[inside]] = class_id
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    probs = draw(st.sampled_from(["flat", "coarse", "noisy"]))
    if probs == "flat":
        class_probs = np.full((classes, height, width), 0.5, np.float32)
    elif probs == "coarse":
        class_probs = (rng.integers(0, 5, (classes, height, width)) / 4).astype(np.float32)
    else:
        class_probs = rng.random((classes, height, width)).astype(np.float32)
    return DenseMap(probs=class_probs, pred=pred, class_names=tuple(f"c{i}" for i in range(classes)))


@settings(max_examples=200, deadline=None)
@given(
    dense=shape_maps(),
    min_confidence=st.sampled_from([0.0, 0.5]),
    min_region_size=st.sampled_from([0, 1, 5]),
    max_prompts=st.sampled_from([None, 0, 2]),
    skip_background=st.booleans(),
)
def test_kernel_prompts_equal_reference_on_rings_c_shapes_and_ties(
    dense, min_confidence, min_region_size, max_prompts, skip_background
):
    _assert_kernel_equals_reference(dense, min_confidence, min_region_size, max_prompts, skip_background)


@pytest.mark.parametrize(
    "extract", [extract_prompts, scipy_prompts.extract_prompts], ids=["kernel", "reference"]
)
def test_centroid_on_a_same_class_dot_is_not_in_the_ring(extract):
    """A 5x5 ring around a dot of its own class: the ring's centroid (2, 2) is the dot, another region."""
    pred = _square_ring(5, 1).astype(np.int32)
    pred[2, 2] = 1
    probs = np.full((2, 5, 5), 0.5, np.float32)
    probs[1, 3, 0] = probs[1, 3, 4] = 0.75  # tied ring peaks: (x, y) = (0, 3) is first in raster order
    dense = DenseMap(probs=probs, pred=pred, class_names=("c0", "c1"))
    prompts = extract(dense, min_confidence=0.0, min_region_size=0, skip_classes=(0,))
    np.testing.assert_array_equal(prompts.coords[:, 0], [[0, 3], [2, 2]])
    np.testing.assert_array_equal(prompts.areas, [16, 1])
    np.testing.assert_array_equal(prompts.boxes, [[0, 0, 5, 5], [2, 2, 3, 3]])
    np.testing.assert_array_equal(prompts.scores, [(14 * 0.5 + 2 * 0.75) / 16, 0.5])
