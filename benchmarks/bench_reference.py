"""Per-stage cost of the pure PyTorch reference pipeline (the denominator of every clipsam speedup).

480×640 image, SCLIP ViT-B/16 + SAM2.1 tiny with seeded random weights (cost does not depend on weight
values), 128 prompts. With --benchmark-disable (the default test run) each body runs once on 4 prompts as a
correctness check; `pytest benchmarks/bench_reference.py --benchmark-enable` measures.
"""

from __future__ import annotations

import numpy as np
import pytest

from clipsam.engine.demo_scene import demo_scene
from clipsam.engine.merge import merge_candidates
from clipsam.engine.model_choice import ModelChoice
from clipsam.engine.pipeline import default_dense_config, encode_segments, vocabulary_from_words
from clipsam.engine.types import Prompts

HEIGHT, WIDTH, PROMPTS = 480, 640, 128
VOCABULARY = ["sky", "car", "road", "tree"]


@pytest.fixture(scope="module")
def reference():
    from clipsam.engine.backends.torch_reference import build_reference_pipeline

    return build_reference_pipeline(ModelChoice(clip_random=True, sam_random=True, seed=0))


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return demo_scene(HEIGHT, WIDTH)


def grid_prompts(count: int, height: int, width: int) -> Prompts:
    """`count` single-point prompts spread over the image on a jittered grid (image frame)."""
    side = int(np.ceil(np.sqrt(count)))
    ys, xs = np.meshgrid((np.arange(side) + 0.5) * height / side, (np.arange(side) + 0.5) * width / side)
    coords = np.stack([xs.ravel(), ys.ravel()], axis=1)[:count].astype(np.float32)
    boxes = np.concatenate([coords - 20, coords + 20], axis=1).astype(np.float32)
    return Prompts(
        coords=coords[:, None, :],
        labels=np.ones((count, 1), np.int32),
        class_ids=(np.arange(count) % len(VOCABULARY)).astype(np.int32),
        scores=np.linspace(0.9, 0.5, count, dtype=np.float32),
        boxes=boxes,
        areas=np.full(count, 1600, np.int64),
    )


def _prompt_count(benchmark) -> int:
    return 4 if benchmark.disabled else PROMPTS


def _run(benchmark, fn):
    rounds = 1 if benchmark.disabled else 3
    return benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=0 if benchmark.disabled else 1)


@pytest.mark.benchmark(group="reference-stages")
def test_reference_sclip_dense_map(benchmark, reference, image):
    vocabulary = vocabulary_from_words(VOCABULARY)
    dense = _run(benchmark, lambda: reference.dense_map(image, vocabulary, default_dense_config(vocabulary)))
    assert dense.probs.shape == (len(VOCABULARY), HEIGHT, WIDTH)


@pytest.mark.benchmark(group="reference-stages")
def test_reference_sam2_encoder(benchmark, reference, image):
    _run(benchmark, lambda: reference.mask_backend.set_image(image))


@pytest.mark.benchmark(group="reference-stages")
def test_reference_decoder_loop(benchmark, reference, image):
    reference.mask_backend.set_image(image)
    prompts = grid_prompts(_prompt_count(benchmark), HEIGHT, WIDTH)
    candidates = _run(benchmark, lambda: reference.mask_backend.predict(prompts))
    benchmark.extra_info["prompts"] = len(prompts)
    assert candidates.masks.shape == (len(prompts), HEIGHT, WIDTH)


@pytest.mark.benchmark(group="reference-stages")
def test_reference_merge_and_rle(benchmark, reference, image):
    reference.mask_backend.set_image(image)
    candidates = reference.mask_backend.predict(grid_prompts(_prompt_count(benchmark), HEIGHT, WIDTH))
    names = tuple(VOCABULARY)

    def merge():
        merged = merge_candidates(candidates, iou_threshold=0.8, min_region_size=100)
        return encode_segments(merged, names)

    segments = _run(benchmark, merge)
    assert all(s.area >= 100 for s in segments)
