"""SAM2 decoder, all prompts of an image: the seed-style per-prompt torch loop vs the faithful ONNX decoder vs
the rewritten (fast) ONNX decoder, side by side in one run.

SAM2.1 tiny with seeded random weights (cost does not depend on weight values), 480×640 image, one positive
click per prompt. The three paths decode the SAME encoder features (the torch predictor's, handed to the
graphs by a fixed encoder) and all include best-of-3 selection and upsampling to the image: each is a
`decode_masks(embedding, prompts)` call on the image's embedding. The benchmarked body is the fast decoder;
the torch loop and the faithful graph are timed by hand just before each of its rounds (median of the warm
rounds); ms per prompt, achieved GFLOP/s (3.56 GFLOP per prompt, the faithful decoder's count), ratios and
parity go to extra_info.
With --benchmark-disable (the default test run) each body runs once on 2 prompts as a correctness check;
`pytest benchmarks/bench_decoder.py --benchmark-enable` measures B = 1, 16, 128, 512 (512: one round) and
asserts issue 5's floor (fast ≥ 3× the torch loop) at 128 prompts.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from floors import floor_fraction

from clipsam.engine.bench.demo_scene import demo_scene
from clipsam.engine.types import Prompts

HEIGHT, WIDTH = 480, 640
FAITHFUL_GFLOP_PER_PROMPT = 3.56
FLOOR_PROMPTS, FLOOR_RATIO = 128, 3.0
# Fast mode (issue 5): ×6. Its decoder is this same fp32 graph (an int8 decoder cut mask IoU to 0.983),
# so the fast-mode figure is the exact one, checked against ×6 in its own test below.
FAST_MODE_FLOOR_RATIO = 6.0
_FEATURE_NAMES = ("image_embed", "high_res_feats_0", "high_res_feats_1")
MEASURED: dict[str, float] = {}  # "fast vs torch loop" at FLOOR_PROMPTS, for the fast-mode floor


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> dict:
    """SAM2.1 tiny (seed 0) on one image: {name: (mask stage, its image embedding)} for the torch reference,
    GraphSam2 (faithful graph) and GraphSam2Fast, the graphs fed the reference's encoder features."""
    from clipsam.engine.backends.graph_stages import GraphSam2, GraphSam2Fast
    from clipsam.engine.backends.onnxruntime import OrtGraph
    from clipsam.export.onnx_sam2_decoder import export_sam2_decoder
    from clipsam.export.sam2_fast_decoder import FAST_GRAPH, IMAGE_GRAPH, export_sam2_fast_decoder
    from clipsam.export.sam2_model import build_sam2_model
    from clipsam.reference.sam2_predictor import Sam2Reference

    model = build_sam2_model("sam2.1-hiera-tiny", random_weights=True, seed=0)
    folder = tmp_path_factory.mktemp("bench-decoder")
    export_sam2_decoder(model, folder / "sam2_decoder.onnx")
    export_sam2_fast_decoder(model, folder, parity_batches=())
    image = demo_scene(HEIGHT, WIDTH)
    reference = Sam2Reference(model)
    reference_embedding = reference.embed(image)
    encoder = PredictorFeatures(reference_embedding)
    cpu = ["CPUExecutionProvider"]
    faithful_decoder = OrtGraph(folder / "sam2_decoder.onnx", cpu)
    fast_decoder, image_graph = OrtGraph(folder / FAST_GRAPH, cpu), OrtGraph(folder / IMAGE_GRAPH, cpu)
    faithful = GraphSam2(encoder, faithful_decoder, model_id="faithful", **_as_runtime(faithful_decoder))
    fast = GraphSam2Fast(encoder, image_graph, fast_decoder, model_id="fast", **_as_runtime(fast_decoder))
    return {
        "torch loop": (reference, reference_embedding),
        "faithful onnx": (faithful, faithful.embed(image)),
        "fast onnx": (fast, fast.embed(image)),
    }


def _as_runtime(decoder) -> dict:
    """Chunking as the factory sets it (engine/artifacts.py): single-threaded workers per core on a
    multi-core CPU."""
    from clipsam.engine.artifacts import WORKER_CHUNK_SIZE
    from clipsam.engine.backends.onnxruntime import decoder_workers

    workers = decoder_workers(decoder)
    return {"chunk_size": WORKER_CHUNK_SIZE, "workers": workers} if workers else {}


def _decode(path: tuple, prompts: Prompts):
    """One path's dense masks for all prompts (MaskCandidates, best of 3, image frame)."""
    stage, embedding = path
    return stage.decode_masks(embedding, prompts)


class PredictorFeatures:
    """An encoder Backend that returns the torch predictor's features (its embedding's arrays) whatever the
    image."""

    def __init__(self, embedding) -> None:
        self.features = {name: embedding.arrays[name] for name in _FEATURE_NAMES}

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(self.features)


def click_prompts(count: int) -> Prompts:
    """`count` single-click prompts on a jittered grid over the image (image frame)."""
    rng = np.random.default_rng(count)
    coords = rng.uniform([0, 0], [WIDTH, HEIGHT], (count, 1, 2)).astype(np.float32)
    return Prompts(
        coords=coords,
        labels=np.ones((count, 1), np.int32),
        class_ids=np.zeros(count, np.int32),
        scores=np.ones(count, np.float32),
        boxes=np.concatenate([coords[:, 0] - 20, coords[:, 0] + 20], 1).astype(np.float32),
        areas=np.full(count, 1600, np.int64),
    )


def _mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    union = (a | b).sum(axis=(1, 2))
    return np.where(union > 0, (a & b).sum(axis=(1, 2)) / np.maximum(union, 1), 1.0)


def _low_res_parity(faithful: tuple, fast: tuple, prompts: Prompts) -> float:
    """Max abs difference of all decoder outputs, fast vs faithful graph, on the same feeds (all prompts)."""
    from clipsam.engine.backends.graph_stages import prompt_feeds

    worst = 0.0
    (faithful, faithful_embedding), (fast, fast_embedding) = faithful, fast
    shared = prompt_feeds(prompts, False, (HEIGHT, WIDTH))
    faithful_feeds = {**faithful_embedding.arrays, **shared}
    fast_feeds = {**fast_embedding.arrays, **shared}
    for start in range(0, len(prompts), 16):
        rows = slice(start, start + 16)
        extra = {"mask_input": np.zeros((len(prompts.labels[rows]), 1, 256, 256), np.float32)}
        extra["has_mask_input"] = np.zeros(len(prompts.labels[rows]), np.float32)
        outputs = []
        for graph, feeds in ((faithful, faithful_feeds), (fast, fast_feeds)):
            chunk = {k: v[rows] if k.startswith("point_") else v for k, v in feeds.items()}
            outputs.append(graph.decoder.run({**chunk, **extra}))
        worst = max(worst, *(float(np.abs(outputs[0][k] - outputs[1][k]).max()) for k in outputs[0]))
    return worst


@pytest.mark.benchmark(group="sam2-decoder")
@pytest.mark.parametrize("count", [1, 16, FLOOR_PROMPTS, 512])
def test_decoder_all_prompts(benchmark, paths, count):
    count = 2 if benchmark.disabled else count
    prompts = click_prompts(count)
    results, seconds = {}, {"torch loop": [], "faithful onnx": []}

    def time_the_others() -> None:
        """Run before every round of the fast body (not timed by the benchmark): the three paths take turns,
        so a load change on this shared machine hits them alike."""
        for name in seconds:
            started = time.perf_counter()
            results[name] = _decode(paths[name], prompts)
            seconds[name].append(time.perf_counter() - started)

    rounds = 1 if benchmark.disabled or count > FLOOR_PROMPTS else (2 if count == FLOOR_PROMPTS else 3)
    results["fast onnx"] = benchmark.pedantic(
        lambda: _decode(paths["fast onnx"], prompts),
        setup=time_the_others,
        rounds=rounds,
        iterations=1,
        warmup_rounds=0 if benchmark.disabled else 1,
    )
    medians = {name: float(np.median(values[-rounds:])) for name, values in seconds.items()}  # warm rounds
    medians["fast onnx"] = medians["faithful onnx"] if benchmark.disabled else benchmark.stats.stats.median
    expected = results["torch loop"]
    for name in ("faithful onnx", "fast onnx"):
        assert results[name].masks.shape == expected.masks.shape == (count, HEIGHT, WIDTH)
        assert _mask_iou(results[name].masks, expected.masks).min() >= 0.999, name
    parity = _low_res_parity(paths["faithful onnx"], paths["fast onnx"], prompts)
    assert parity <= 1e-4
    info = benchmark.extra_info
    info.update(prompts=count, parity_max_abs_fast_vs_faithful=parity)
    for name, value in medians.items():
        info[f"{name} ms per prompt"] = round(1e3 * value / count, 2)
        info[f"{name} GFLOP/s (3.56 GFLOP per prompt)"] = round(FAITHFUL_GFLOP_PER_PROMPT * count / value, 1)
    info["fast vs torch loop"] = round(medians["torch loop"] / medians["fast onnx"], 2)
    info["fast vs faithful onnx"] = round(medians["faithful onnx"] / medians["fast onnx"], 2)
    info["faithful onnx vs torch loop"] = round(medians["torch loop"] / medians["faithful onnx"], 2)
    if not benchmark.disabled and count == FLOOR_PROMPTS:
        MEASURED["fast vs torch loop"] = info["fast vs torch loop"]
        assert info["fast vs torch loop"] >= FLOOR_RATIO * floor_fraction(), info


def test_decoder_fast_mode_floor(request):
    """The ×6 fast-mode floor, on the ratio measured above (enabled runs only). It assumed bf16 on AMX
    (3.56 GFLOP at ~409 GFLOP/s); this AVX2-only CPU has neither, so it fails here: the measured status."""
    if not MEASURED:
        assert request.config.getoption("benchmark_disable"), "run with the decoder benchmark above"
        return
    ratio = MEASURED["fast vs torch loop"]
    assert ratio >= FAST_MODE_FLOOR_RATIO, f"decoder ×{ratio:.2f} over the loop, fast-mode floor ×6"
