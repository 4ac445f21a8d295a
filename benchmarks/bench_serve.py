"""The service (`clipsam serve`) against the in-process pipeline on the same artifacts and images.

Figures (extra_info): warm request p50 ÷ in-process `Pipeline.segment` p50 on the same distinct images (the
image cache never answers: one scene seed per image); the same image with a new vocabulary (both encoders
from the cache) against its first request; concurrency-4 throughput ÷ in-process sequential throughput
(`clipsam.serve.load`, as `clipsam bench --server`); malformed requests: all 4xx, still ready, ingress RSS
growth. Enabled: 480×640 scenes on CLIPSAM_BENCH_ARTIFACTS (ViT-B/16 + SAM2.1 tiny, `clipsam export
--random-weights`), CLIPSAM_BENCH_SERVE_REQUESTS load requests (default 20). Disabled (the default run):
tiny artifacts, small images, each figure computed once as a correctness check (the service answers
exactly what the pipeline computes); no speed is asserted.

Run for real:  CLIPSAM_BENCH_ARTIFACTS=DIR python -m pytest benchmarks/bench_serve.py --benchmark-enable -q -s
"""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from harness import benchmarks_enabled

from clipsam import SegmentOptions
from clipsam.engine.bench.demo_scene import demo_scene
from clipsam.serve.config import ServeConfig, StageResources
from clipsam.serve.load import png_bytes, run_load

WORDS = ["sky", "car", "road", "tree", "grass"]
# Random weights give near-uniform class probabilities: min confidence 0 (as `clipsam demo` and
# `clipsam bench` do), at most 32 prompts, so the decoder has work.
FIELDS = {"min_confidence": 0.0, "max_prompts": 32}
OPTIONS = SegmentOptions(**FIELDS)
OTHER_WORDS = ["building", "wall", "road"]  # in every export's text features, so older folders work too


def _scenes(count: int, size: tuple[int, int], first_seed: int) -> list[np.ndarray]:
    return [demo_scene(*size, seed=first_seed + index) for index in range(count)]


@pytest.fixture(scope="module")
def setting(request: pytest.FixtureRequest) -> dict:
    enabled = benchmarks_enabled(request.config)
    return {
        "size": (480, 640) if enabled else (96, 128),
        "latency_images": 5 if enabled else 2,
        "load_requests": int(os.environ.get("CLIPSAM_BENCH_SERVE_REQUESTS", "20")) if enabled else 4,
        "malformed": 50 if enabled else 5,
    }


@pytest.fixture(scope="module")
def service(bench_artifacts: Path):
    from clipsam.serve.runner import start_service
    from tests.serve_helpers import free_port

    stage = StageResources(num_cpus=0.5)
    config = ServeConfig(str(bench_artifacts), port=free_port(), sclip=stage, encoder=stage, decoder=stage)
    running = start_service(config, timeout_s=600)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def pipeline(bench_artifacts: Path):
    import clipsam.kernels
    from clipsam import load_pipeline

    clipsam.kernels.warmup()
    return load_pipeline(artifacts=str(bench_artifacts))


def _request(url: str, picture: np.ndarray, words: list[str]) -> tuple[float, dict, dict]:
    from tests.serve_helpers import post_json

    body = {
        "image": base64.b64encode(png_bytes(picture)).decode(),
        "vocabulary": words,
        "file": "bench",
        **FIELDS,
    }
    start = time.perf_counter()
    status, headers, answer = post_json(f"{url}/v1/segment", body, timeout=600)
    elapsed = (time.perf_counter() - start) * 1000.0
    assert status == 200, answer
    return elapsed, json.loads(answer), headers


def _without_timings(record: dict) -> dict:
    return {key: value for key, value in record.items() if key not in ("timings_ms", "image")}


def test_serve_warm_request_vs_in_process(benchmark, service, pipeline, setting):
    from clipsam import result_to_json, vocabulary_from_words

    vocabulary = vocabulary_from_words(WORDS)
    pictures = _scenes(setting["latency_images"], setting["size"], first_seed=100)
    pipeline.segment(pictures[0], vocabulary, OPTIONS)  # warm the in-process sessions too
    local, served = [], []
    for picture in pictures:
        start = time.perf_counter()
        result = pipeline.segment(picture, vocabulary, OPTIONS)
        local.append((time.perf_counter() - start) * 1000.0)
        elapsed, record, _ = _request(service.url, picture, WORDS)
        served.append(elapsed)
        assert _without_timings(record) == _without_timings(result_to_json(result, "bench"))
    fresh = iter(_scenes(64, setting["size"], first_seed=1000))
    benchmark.pedantic(lambda: _request(service.url, next(fresh), WORDS), rounds=3, iterations=1)
    ratio = float(np.median(served) / np.median(local))
    benchmark.extra_info.update(
        in_process_p50_ms=float(np.median(local)),
        served_p50_ms=float(np.median(served)),
        served_over_in_process=ratio,
        target="<= 1.15",
    )
    print(
        f"\nwarm request p50 {np.median(served):.0f} ms vs in-process {np.median(local):.0f} ms: ×{ratio:.3f}"
    )


def test_serve_same_image_new_vocabulary(service, setting):
    picture = _scenes(1, setting["size"], first_seed=500)[0]
    first_ms, _, first_headers = _request(service.url, picture, WORDS)
    again_ms, record, headers = _request(service.url, picture, OTHER_WORDS)
    assert first_headers["X-Clipsam-Cache"].startswith("sclip=miss")
    assert headers["X-Clipsam-Cache"] == "sclip=hit,sam2=hit" and record["counts"]["prompts"] > 0
    print(
        f"\nsame image, new vocabulary: {again_ms:.0f} ms vs first {first_ms:.0f} ms: "
        f"×{first_ms / again_ms:.2f}"
    )


def test_serve_concurrency_throughput(service, pipeline, setting):
    from clipsam import vocabulary_from_words

    count = setting["load_requests"]
    pictures = _scenes(count, setting["size"], first_seed=2000)
    vocabulary = vocabulary_from_words(WORDS)
    start = time.perf_counter()
    for picture in pictures[: max(2, count // 4)]:
        pipeline.segment(picture, vocabulary, OPTIONS)
    sequential = max(2, count // 4) / (time.perf_counter() - start)
    run = run_load(service.url, [png_bytes(p) for p in pictures], WORDS, 4, count, FIELDS)
    served = len(run.samples) / run.wall_s
    p99 = float(np.percentile([s["request"] for s in run.samples], 99))
    assert run.statuses == {200: count}, run.errors
    print(
        f"\nconcurrency 4, {count} requests: {served:.3f} req/s vs in-process sequential {sequential:.3f} "
        f"images/s: ×{served / sequential:.3f}; p99 {p99:.0f} ms; statuses {dict(run.statuses)}"
    )


def test_serve_malformed_requests_leave_it_ready(service, setting):
    from tests.serve_helpers import http, post_json

    pid = json.loads(http("GET", f"{service.url}/healthz")[2])["pid"]
    before = _rss_kib(pid)
    bodies = [b"{broken", b'{"vocabulary": ["sky"]}', b"[]"]
    truncated = base64.b64encode(png_bytes(demo_scene(64, 64))[:50]).decode()
    statuses = []
    for index in range(setting["malformed"]):
        if index % 4 == 3:
            statuses.append(
                post_json(f"{service.url}/v1/segment", {"image": truncated, "vocabulary": ["sky"]})[0]
            )
        else:
            body = bodies[index % 3]
            statuses.append(http("POST", f"{service.url}/v1/segment", body, "application/json")[0])
    after = _rss_kib(pid)
    assert all(400 <= status < 500 for status in statuses), statuses
    assert json.loads(http("GET", f"{service.url}/readyz")[2])["ready"] is True
    print(
        f"\n{len(statuses)} malformed requests: all 4xx; ingress RSS {before} → {after} KiB "
        f"({after / before - 1:+.1%})"
    )


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")
