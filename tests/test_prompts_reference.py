"""The kernel-based prompt extraction equals the scipy-per-class reference on generated dense maps."""

from __future__ import annotations

import numpy as np
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
    kwargs = dict(
        min_confidence=min_confidence,
        min_region_size=min_region_size,
        max_prompts=max_prompts,
        skip_classes=(0,) if skip_background else (),
    )
    fast = extract_prompts(dense, **kwargs)
    slow = scipy_prompts.extract_prompts(dense, **kwargs)
    for field in ("coords", "labels", "class_ids", "boxes", "areas"):
        np.testing.assert_array_equal(getattr(fast, field), getattr(slow, field), err_msg=field)
    np.testing.assert_allclose(fast.scores, slow.scores, rtol=1e-6)
