"""The rewritten SAM2 decoder (per-image graph + fast graph) against sam2's own modules and against GraphSam2.

SAM2.1 tiny, random weights (seed 0), both graphs exported once for the module. Tolerance 1e-4 max abs on
every output (fp32), for B = 1, 7, 64, 300 with point, box and mask prompts mixed in one call.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from clipsam.engine.backends.graph_stages import GraphSam2, GraphSam2Fast
from clipsam.engine.backends.onnxruntime import OrtGraph
from clipsam.engine.types import Prompts
from clipsam.export.onnx_sam2_decoder import (
    OUTPUT_NAMES,
    export_sam2_decoder,
    random_features,
    random_prompts,
    reference_for_prompts,
)
from clipsam.export.onnx_utils import forbidden_ops, op_census
from clipsam.export.sam2_fast_decoder import (
    FAST_GRAPH,
    IMAGE_GRAPH,
    FastDecoderSessions,
    export_sam2_fast_decoder,
)
from clipsam.export.sam2_model import Sam2Model
from clipsam.kernels import rle as rle_codec

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def exported(sam2_tiny: Sam2Model, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("sam2-fast-decoder")
    return folder, export_sam2_fast_decoder(sam2_tiny, folder, parity_batches=(1,))


@pytest.fixture(scope="module")
def sessions(exported: tuple[Path, dict]) -> FastDecoderSessions:
    return FastDecoderSessions(exported[0] / IMAGE_GRAPH, exported[0] / FAST_GRAPH)


def max_errors(sam2_tiny, sessions, prompts, features, chunk_size: int, rows=slice(None)) -> dict[str, float]:
    """The fast graphs on ALL prompts (in chunks of `chunk_size`) vs sam2 on `rows` of them."""
    got = sessions.decode(sessions.image_tensors(features), prompts, chunk_size)
    count = prompts["point_labels"].shape[0]
    assert got["low_res_masks"].shape == (count, 4, 256, 256) and got["iou_predictions"].shape == (count, 4)
    sample = {name: value[rows] for name, value in prompts.items()}
    expected = reference_for_prompts(sam2_tiny, features, sample)
    return {name: float(np.abs(got[name][rows] - expected[name]).max()) for name in OUTPUT_NAMES}


def test_graphs_are_clean_and_keep_the_prompt_contract(exported):
    folder, report = exported
    for name in (IMAGE_GRAPH, FAST_GRAPH):
        assert forbidden_ops(op_census(folder / name)) == [], name
    inputs = {spec["name"]: spec for spec in report["decoder"]["inputs"]}
    assert inputs["point_labels"]["dtype"] == "int32"
    assert inputs["point_coords"]["shape"] == ["num_prompts", "num_points", 2]
    assert inputs["image_src"]["shape"] == [1, 4096, 256]
    outputs = {spec["name"]: spec["shape"] for spec in report["decoder"]["outputs"]}
    assert outputs["low_res_masks"] == ["num_prompts", 4, 256, 256]
    assert max(report["parity"]["batch_1"].values()) <= TOLERANCE
    graph = onnx.load(str(folder / FAST_GRAPH), load_external_data=False)
    assert {node.op_type for node in graph.graph.node}.isdisjoint({"ConvTranspose"})  # upscaling is matmuls


@pytest.mark.parametrize("with_mask", [False, True])
def test_single_prompt_with_and_without_mask(sam2_tiny, sessions, with_mask):
    prompts = random_prompts(1, 2, seed=5, masks=False)
    if with_mask:
        prompts["has_mask_input"][:] = 1.0
        prompts["mask_input"][:] = 4.0 * np.random.default_rng(5).standard_normal((1, 1, 256, 256))
    errors = max_errors(sam2_tiny, sessions, prompts, random_features(seed=2), chunk_size=1)
    assert max(errors.values()) <= TOLERANCE, errors


@pytest.mark.parametrize(("count", "chunk_size", "stride"), [(7, 7, 1), (64, 64, 1), (300, 60, 13)])
def test_mixed_batches_match_sam2(sam2_tiny, sessions, count, chunk_size, stride):
    """Point prompts, box prompts, negative clicks, -1 padding; a mask prompt on every other row.

    Prompts are independent in both decoders, so for B = 300 (in chunks of 60 to bound memory) sam2's
    ~4 GB-per-64-prompt reference checks every 13th row (mask, box and point rows alike)."""
    prompts = random_prompts(count, 4, seed=count)
    assert 0 < prompts["has_mask_input"].sum() < count and (prompts["point_labels"] == 2).any()
    rows = slice(None, None, stride)
    assert 0 < prompts["has_mask_input"][rows].sum() < len(prompts["has_mask_input"][rows])
    errors = max_errors(sam2_tiny, sessions, prompts, random_features(seed=count), chunk_size, rows)
    assert max(errors.values()) <= TOLERANCE, errors


class FixedEncoder:
    """An encoder Backend stand-in: seeded random features, whatever the image (both paths share it)."""

    def __init__(self, seed: int) -> None:
        self.features = random_features(seed)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert feeds["image"].shape == (1, 3, 1024, 1024)
        return dict(self.features)


def box_prompts(count: int, height: int, width: int) -> Prompts:
    rng = np.random.default_rng(count)
    coords = rng.uniform([0, 0], [width, height], (count, 1, 2)).astype(np.float32)
    corners = np.sort(rng.uniform([0, 0], [width, height], (count, 2, 2)), axis=1).reshape(count, 4)
    return Prompts(
        coords=coords,
        labels=np.ones((count, 1), np.int32),
        class_ids=np.arange(count, dtype=np.int32) % 3,
        scores=np.linspace(0.9, 0.5, count, dtype=np.float32),
        boxes=corners.astype(np.float32),
        areas=np.full(count, 100, np.int64),
    )


@pytest.mark.parametrize("use_boxes", [False, True])
def test_runtime_masks_equal_graph_sam2(sam2_tiny, exported, tmp_path_factory, use_boxes):
    folder = exported[0]
    faithful_path = folder / "sam2_decoder.onnx"
    if not faithful_path.exists():
        export_sam2_decoder(sam2_tiny, faithful_path)
    encoder = FixedEncoder(seed=3)
    faithful = GraphSam2(
        encoder, OrtGraph(faithful_path, ["CPUExecutionProvider"]), model_id="faithful", chunk_size=8
    )
    fast = GraphSam2Fast(
        encoder,
        OrtGraph(folder / IMAGE_GRAPH, ["CPUExecutionProvider"]),
        OrtGraph(folder / FAST_GRAPH, ["CPUExecutionProvider"]),
        model_id="fast",
        chunk_size=4,
    )
    image = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    prompts = box_prompts(10, 60, 80)
    expected = faithful.decode_masks(faithful.embed(image), prompts, use_boxes)
    got = fast.decode_masks(fast.embed(image), prompts, use_boxes)
    assert got.masks.shape == expected.masks.shape == (10, 60, 80)
    intersection = (got.masks & expected.masks).sum(axis=(1, 2))
    union = (got.masks | expected.masks).sum(axis=(1, 2))
    iou = np.where(union > 0, intersection / np.maximum(union, 1), 1.0)
    assert iou.min() >= 0.999, iou
    assert expected.masks.any(axis=(1, 2)).sum() >= 3  # the comparison is not between empty masks
    np.testing.assert_allclose(got.iou, expected.iou, atol=1e-5)
    np.testing.assert_array_equal(got.class_ids, expected.class_ids)


def test_prompt_parallel_workers_give_the_sequential_result(exported):
    """GraphSam2's worker threads (single-threaded sessions, chunks dealt round-robin) vs one session, and
    decode (RLEs) vs decode_masks."""
    folder, cpu = exported[0], ["CPUExecutionProvider"]
    encoder, image_graph = FixedEncoder(seed=3), OrtGraph(folder / IMAGE_GRAPH, cpu)
    sequential = GraphSam2Fast(
        encoder, image_graph, OrtGraph(folder / FAST_GRAPH, cpu), model_id="fast", chunk_size=4
    )
    workers = [OrtGraph(folder / FAST_GRAPH, cpu, threads=1) for _ in range(3)]
    parallel = GraphSam2Fast(
        encoder, image_graph, sequential.decoder, model_id="fast", chunk_size=2, workers=workers
    )
    image = np.random.default_rng(1).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    prompts = box_prompts(11, 60, 80)  # 6 chunks over 3 workers, the last chunk short
    embedding = sequential.embed(image)  # one stage's embedding serves the other: same model_id
    expected, got = sequential.decode_masks(embedding, prompts), parallel.decode_masks(embedding, prompts)
    np.testing.assert_array_equal(got.masks, expected.masks)
    np.testing.assert_allclose(got.iou, expected.iou, atol=1e-6)
    np.testing.assert_array_equal(got.class_ids, expected.class_ids)
    assert expected.masks.any(axis=(1, 2)).sum() >= 3
    # The pipeline's path: masks straight to RLE (never dense, chunk by chunk) = the dense masks encoded.
    rles = parallel.decode(embedding, prompts)
    assert [r["counts"] for r in rles.rles] == [r["counts"] for r in rle_codec.encode_batch(expected.masks)]
    np.testing.assert_array_equal(rles.scores, expected.scores)
    assert len(parallel.decode(embedding, box_prompts(0, 60, 80))) == 0


def test_runtime_module_is_torch_free():
    code = "import sys; sys.modules['torch'] = None\nimport clipsam.engine.backends.graph_stages\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
