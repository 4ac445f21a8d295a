"""Reduced-precision mechanisms for the exported graphs, each against onnxruntime fp32 (ORT_ENABLE_ALL)
measured in the same test: OpenVINO at fp32 and at this CPU's fast precision (bf16 only where the CPU runs
it natively), and onnxruntime int8 dynamic quantisation (U8U8, MatMul/Gemm weights; export/quantize.py).

Graphs: SCLIP ViT-B/16 tower (6 crops of 224), SAM2.1 tiny encoder (1024), SAM2 decoder (16 prompts in one
call; 64 prompts in chunks of 32 as GraphSam2 runs them), seeded random weights, demo street scene 480×640.
extra_info holds the ratio vs fp32 ORT (> 1: faster), max abs error per output, per-prompt mask IoU for the
decoder, the machine and the library versions. CLIPSAM_BENCH_ARTIFACTS=DIR reuses an export made with
`clipsam export --out DIR --random-weights`.

Run for real:  python -m pytest benchmarks/bench_precision.py --benchmark-enable -q
With the default `--benchmark-disable` every body runs once (golden tiny CLIP tower, 4 prompts) as a
correctness check and nothing about time is asserted.
"""

from __future__ import annotations

import os
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from clipsam.engine.backends.onnxruntime import OrtGraph
from clipsam.engine.backends.openvino import OvGraph, fast_precision
from clipsam.engine.bench.demo_scene import demo_scene
from clipsam.engine.bench.record import library_versions, machine_info
from clipsam.engine.transforms import preprocess_sam2, sam2_point_coords
from clipsam.kernels.upsample import upsample_masks

HEIGHT, WIDTH, CROPS = 480, 640, 6
DECODER_CASES = {"decoder_b16": (16, 16), "decoder_b64": (64, 32)}  # prompts, chunk
MECHANISMS = ("openvino_fp32", "openvino_fast", "onnxruntime_int8")
MIN_MASK_IOU = 0.99  # issue 5: per segment, fast mode vs fp32


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    reuse = os.environ.get("CLIPSAM_BENCH_ARTIFACTS")
    if reuse:
        return Path(reuse)
    if _benchmarks_disabled(request.config):  # correctness run: the session's tiny-CLIP export
        return request.getfixturevalue("tiny_artifacts")
    from clipsam.export.build import ExportRequest, export_artifacts

    out = tmp_path_factory.mktemp("precision-artifacts")
    export_artifacts(ExportRequest(out, clip_random=True, sam_random=True, seed=0), log=lambda _: None)
    return out


class GraphCache:
    """Graphs, feeds and fp32 outputs built once per module: a mechanism that resolves to the same graph as
    another (openvino_fast is openvino_fp32 on a CPU without native bf16) reuses it."""

    def __init__(self, artifacts: Path, int8_dir: Path, disabled: bool):
        self.artifacts, self.int8_dir, self.disabled = artifacts, int8_dir, disabled
        self._graphs: dict[tuple[str, str], object] = {}
        self._calls: dict[str, list[dict[str, np.ndarray]]] = {}
        self._expected: dict[str, dict[str, np.ndarray]] = {}

    def graph(self, graph: str, mechanism: str) -> object:
        precision = fast_precision() if mechanism == "openvino_fast" else "fp32"
        key = (graph, "openvino_" + precision if mechanism.startswith("openvino") else mechanism)
        if key not in self._graphs:
            self._graphs[key] = self._build(graph, key[1])
        return self._graphs[key]

    def calls(self, case: str) -> list[dict[str, np.ndarray]]:
        """The calls one measurement makes: a list of feed dicts (several for a chunked decoder case)."""
        if case not in self._calls:
            self._calls[case] = self._make_calls(case)
        return self._calls[case]

    def expected(self, case: str) -> dict[str, np.ndarray]:
        """onnxruntime fp32 outputs of `calls(case)`, concatenated over the calls."""
        if case not in self._expected:
            self._expected[case] = _run_calls(
                self.graph(_graph_name(case), "onnxruntime_fp32"), self.calls(case)
            )
        return self._expected[case]

    def _build(self, graph: str, mechanism: str) -> object:
        path = self.artifacts / f"{graph}.onnx"
        if mechanism == "onnxruntime_fp32":
            return OrtGraph(path, ["CPUExecutionProvider"])
        if mechanism.startswith("openvino_"):
            return OvGraph(path, mechanism.removeprefix("openvino_"))
        from clipsam.export.quantize import quantize_graph

        return OrtGraph(
            quantize_graph(path, self.int8_dir / f"{graph}.onnx", unsigned_weights=True),
            ["CPUExecutionProvider"],
        )

    def _make_calls(self, case: str) -> list[dict[str, np.ndarray]]:
        image = demo_scene(HEIGHT, WIDTH)
        if case == "sclip_tower":
            crop_count = 1 if self.disabled else CROPS
            return [
                {"crops": np.random.default_rng(0).standard_normal((crop_count, 3, 224, 224), np.float32)}
            ]
        if case == "sam2_encoder":
            return [{"image": preprocess_sam2(image)}]
        features = self.expected("sam2_encoder")
        count, chunk = (2, 1) if self.disabled else DECODER_CASES[case]
        rng = np.random.default_rng(1)
        clicks = np.stack([rng.uniform(0, WIDTH, count), rng.uniform(0, HEIGHT, count)], axis=1)[:, None]
        coords = sam2_point_coords(clicks.astype(np.float32), HEIGHT, WIDTH).astype(np.float32)  # [B, 1, 2]
        return [_decoder_feeds(features, coords[start : start + chunk]) for start in range(0, count, chunk)]


@pytest.fixture(scope="module")
def cache(
    artifacts: Path, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> GraphCache:
    return GraphCache(artifacts, tmp_path_factory.mktemp("int8"), _benchmarks_disabled(request.config))


def _benchmarks_disabled(config: pytest.Config) -> bool:
    """pytest-benchmark's own rule (its session is not reachable from a module fixture)."""
    return bool(config.getoption("benchmark_disable")) and not config.getoption("benchmark_enable")


def _graph_name(case: str) -> str:
    return "sam2_decoder" if case.startswith("decoder") else case


def _decoder_feeds(features: dict[str, np.ndarray], coords: np.ndarray) -> dict[str, np.ndarray]:
    """Decoder inputs for single positive clicks: coords float32 [B, 1, 2] in SAM's 1024 frame."""
    count = coords.shape[0]
    return {
        **features,
        "point_coords": coords,
        "point_labels": np.ones((count, 1), np.int32),
        "mask_input": np.zeros((count, 1, 256, 256), np.float32),
        "has_mask_input": np.zeros(count, np.float32),
    }


def _run_calls(graph, calls: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    outputs = [graph.run(feeds) for feeds in calls]
    return {name: np.concatenate([o[name] for o in outputs]) for name in outputs[0]}


def _kept_masks(outputs: dict[str, np.ndarray]) -> np.ndarray:
    """bool [B, H, W]: best of mask tokens 1..3 by predicted IoU, upsampled to the image (as GraphSam2)."""
    multimask_iou = outputs["iou_predictions"][:, 1:]
    best = np.argmax(multimask_iou, axis=1)
    low_res = outputs["low_res_masks"][np.arange(best.shape[0]), 1 + best]
    return upsample_masks(np.ascontiguousarray(low_res), HEIGHT, WIDTH)


def _agreement(ours: dict[str, np.ndarray], expected: dict[str, np.ndarray], case: str) -> dict:
    record = {f"max_abs_{name}": float(np.abs(ours[name] - expected[name]).max()) for name in expected}
    if case.startswith("decoder"):
        mine, theirs = _kept_masks(ours), _kept_masks(expected)
        union = (mine | theirs).sum(axis=(1, 2))
        ious = np.where(union > 0, (mine & theirs).sum(axis=(1, 2)) / np.maximum(union, 1), 1.0)
        record.update(mask_iou_min=float(ious.min()), mask_iou_mean=float(ious.mean()))
    return record


@pytest.mark.benchmark(group="precision")
@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("case", ["sclip_tower", "sam2_encoder", *DECODER_CASES])
def test_precision_vs_onnxruntime_fp32(benchmark, cache, case, mechanism):
    calls = cache.calls(case)
    baseline = cache.graph(_graph_name(case), "onnxruntime_fp32")
    candidate = cache.graph(_graph_name(case), mechanism)
    expected = cache.expected(case)
    baseline_samples: list[float] = []

    def time_baseline() -> None:
        # pytest-benchmark calls `setup` untimed before every round: the fp32 baseline runs interleaved
        # with the candidate, so a change in machine load hits both alike.
        start = time.perf_counter()
        _run_calls(baseline, calls)
        baseline_samples.append(time.perf_counter() - start)

    ours = benchmark.pedantic(
        lambda: _run_calls(candidate, calls),
        setup=None if benchmark.disabled else time_baseline,
        rounds=1 if benchmark.disabled else 3,
        iterations=1,
        warmup_rounds=0 if benchmark.disabled else 1,
    )
    agreement = _agreement(ours, expected, case)
    machine = machine_info()
    benchmark.extra_info.update(
        {
            "case": case,
            "mechanism": mechanism,
            "precision": getattr(candidate, "precision", "int8" if mechanism.endswith("int8") else "fp32"),
            "agreement_vs_fp32": agreement,
            "machine": f"{machine['cpu_model']}, {machine['usable_cores']} cores",
            "load_average_1m": os.getloadavg()[0],
            **library_versions(),
            "openvino": metadata.version("openvino"),
        }
    )
    if mechanism.startswith("openvino") and "mask_iou_min" in agreement:
        assert agreement["mask_iou_min"] >= MIN_MASK_IOU, agreement
    if benchmark.disabled:
        return
    baseline_s = float(np.median(baseline_samples))
    ours_s = float(benchmark.stats.stats.median)
    benchmark.extra_info.update(
        {
            "ratio_vs_onnxruntime_fp32": baseline_s / ours_s,
            "ours_median_s": ours_s,
            "fp32_median_s": baseline_s,
        }
    )
