"""Per-stage cost of the pure PyTorch reference pipeline (the denominator of every clipsam speedup).

480×640 image, SCLIP ViT-B/16 + SAM2.1 tiny with seeded random weights (cost does not depend on weight
values), 128 prompts. With --benchmark-disable (the default test run) each body runs once on 4 prompts as a
correctness check; `pytest benchmarks/bench_reference.py --benchmark-enable` measures.
"""

from __future__ import annotations

import numpy as np
import pytest

from clipsam.engine.bench.demo_scene import demo_scene
from clipsam.engine.models.choice import ModelChoice
from clipsam.engine.pipeline import SegmentOptions, default_dense_config, vocabulary_from_words
from clipsam.engine.prompts import grid_prompts

HEIGHT, WIDTH, PROMPTS = 480, 640, 128
VOCABULARY = ["sky", "car", "road", "tree"]


@pytest.fixture(scope="module")
def reference():
    from clipsam.engine.factory import load_reference_pipeline

    return load_reference_pipeline(ModelChoice(clip_random=True, sam_random=True, seed=0))


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return demo_scene(HEIGHT, WIDTH)


def grid(count: int):
    """`count` one-point prompts on engine/prompts.py's regular grid over the image (image frame)."""
    return grid_prompts(HEIGHT, WIDTH, count, len(VOCABULARY))


def _prompt_count(benchmark) -> int:
    return 4 if benchmark.disabled else PROMPTS


def _run(benchmark, fn):
    rounds = 1 if benchmark.disabled else 3
    return benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=0 if benchmark.disabled else 1)


@pytest.mark.benchmark(group="reference-stages")
def test_reference_sclip_dense_map(benchmark, reference, image):
    vocabulary = vocabulary_from_words(VOCABULARY)
    dense = _run(benchmark, lambda: reference.dense(image, vocabulary, default_dense_config(vocabulary)))
    assert dense.probs.shape == (len(VOCABULARY), HEIGHT, WIDTH)


@pytest.mark.benchmark(group="reference-stages")
def test_reference_sam2_encoder(benchmark, reference, image):
    embedding = _run(benchmark, lambda: reference.embed(image))
    assert embedding.image_hw == (HEIGHT, WIDTH)


@pytest.mark.benchmark(group="reference-stages")
def test_reference_decoder_loop(benchmark, reference, image):
    embedding = reference.embed(image)
    prompts = grid(_prompt_count(benchmark))
    candidates = _run(benchmark, lambda: reference.decode_masks(embedding, prompts))
    benchmark.extra_info["prompts"] = len(prompts)
    assert candidates.masks.shape == (len(prompts), HEIGHT, WIDTH)


@pytest.mark.benchmark(group="reference-stages")
def test_reference_merge_and_rle(benchmark, reference, image):
    candidates = reference.decode_masks(reference.embed(image), grid(_prompt_count(benchmark)))
    options = SegmentOptions(iou_threshold=0.8, min_region_size=100)
    segments = _run(benchmark, lambda: reference.merge(candidates, options, tuple(VOCABULARY)))
    assert all(s.area >= 100 for s in segments)
