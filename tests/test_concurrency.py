"""One Pipeline serves several threads at once: the stages keep no per-image state (issue 15).

Four threads segment four different images through the SAME pipeline object, started together behind a
barrier, and each gets exactly its image's single-threaded result; the same for the stage methods composed
by hand (a server's path: embed / features in one request, decode / dense_map in another).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from clipsam.engine.bench.demo_scene import demo_scene
from clipsam.engine.factory import load_pipeline
from clipsam.engine.pipeline import SegmentOptions, vocabulary_from_words

THREADS = 4
VOCABULARY = vocabulary_from_words(["sky", "car", "road", "tree", "grass"])
OPTIONS = SegmentOptions(min_confidence=0.0, min_region_size=30, max_prompts=12)


def _images() -> list[np.ndarray]:
    scene = demo_scene(96, 128)
    rng = np.random.default_rng(0)
    noisy = [np.clip(scene.astype(np.int16) + rng.integers(-40, 40, scene.shape), 0, 255) for _ in range(2)]
    return [scene, scene[:, ::-1].copy(), *[image.astype(np.uint8) for image in noisy]]


def _key(result) -> list:
    return [(s.class_id, round(s.score, 6), s.area, s.rle["counts"]) for s in result.segments]


def _together(call, items):
    """call(item) for every item, one thread each, all released at once."""
    barrier = threading.Barrier(len(items))

    def run(item):
        barrier.wait(timeout=60)
        return call(item)

    with ThreadPoolExecutor(len(items)) as pool:
        return list(pool.map(run, items))


def test_segment_from_four_threads_equals_single_threaded(artifacts):
    """On OpenVINO (its graphs share a pool of infer requests); onnxruntime: the stage test below."""
    pipeline = load_pipeline(artifacts, "openvino")
    images = _images()
    alone = [_key(pipeline.segment(image, VOCABULARY, OPTIONS)) for image in images]
    assert all(alone) and len({str(key) for key in alone}) == THREADS  # four different answers to mix up
    together = _together(lambda image: _key(pipeline.segment(image, VOCABULARY, OPTIONS)), images)
    assert together == alone


def test_stage_methods_from_four_threads(artifacts):
    """Embeddings and patch features made concurrently, then decoded / scored concurrently in another
    order: each image's masks and dense map are its own (onnxruntime)."""
    pipeline = load_pipeline(artifacts)
    images = _images()
    text = pipeline.text(VOCABULARY)
    embeddings = _together(pipeline.embed, images)
    features = _together(pipeline.features, images)
    dense = [pipeline.dense_map(f, text) for f in features]
    prompts = [pipeline.prompts(d, OPTIONS, background=False) for d in dense]
    order = [3, 1, 0, 2]
    decoded = _together(lambda i: pipeline.decode(embeddings[i], prompts[i]), order)
    for index, candidates in zip(order, decoded, strict=True):
        expected = pipeline.decode(pipeline.embed(images[index]), prompts[index])
        assert [r["counts"] for r in candidates.rles] == [r["counts"] for r in expected.rles]
        np.testing.assert_array_equal(candidates.scores, expected.scores)
    maps = _together(lambda i: pipeline.dense_map(features[i], text), order)
    for index, dense_map in zip(order, maps, strict=True):
        np.testing.assert_array_equal(dense_map.probs, dense[index].probs)
