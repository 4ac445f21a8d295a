"""The exported SAM2 prompt encoder + mask decoder graph against sam2's own modules and its image predictor.

SAM2.1 tiny, random weights (seed 0), exported once for the module; tolerance 1e-4 max abs on every output.
Prompts of a batch are independent, so large batches are checked on a sample of rows.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

from clipsam.export.onnx_sam2_decoder import (
    INPUT_NAMES,
    OUTPUT_NAMES,
    export_sam2_decoder,
    random_features,
    random_prompts,
    reference_for_prompts,
)
from clipsam.export.onnx_utils import forbidden_ops, io_specs, op_census
from clipsam.export.sam2_model import Sam2Model

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def exported(sam2_tiny: Sam2Model, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("sam2-decoder") / "sam2_decoder.onnx"
    return path, export_sam2_decoder(sam2_tiny, path)


@pytest.fixture(scope="module")
def session(exported: tuple[Path, dict]) -> onnxruntime.InferenceSession:
    return onnxruntime.InferenceSession(str(exported[0]), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def features() -> dict[str, np.ndarray]:
    return random_features(seed=1)


def run_graph(session: onnxruntime.InferenceSession, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return dict(zip(OUTPUT_NAMES, session.run(OUTPUT_NAMES, feeds), strict=True))


def max_errors(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> dict[str, float]:
    for name in OUTPUT_NAMES:
        assert actual[name].shape == expected[name].shape, name
    return {name: float(np.abs(actual[name] - expected[name]).max()) for name in OUTPUT_NAMES}


def test_io_contract(exported: tuple[Path, dict]) -> None:
    path, report = exported
    specs = io_specs(path)
    assert report["inputs"] == specs["inputs"] and report["outputs"] == specs["outputs"]
    inputs = {spec["name"]: (spec["shape"], spec["dtype"]) for spec in specs["inputs"]}
    outputs = {spec["name"]: (spec["shape"], spec["dtype"]) for spec in specs["outputs"]}
    assert [spec["name"] for spec in specs["inputs"]] == INPUT_NAMES
    assert [spec["name"] for spec in specs["outputs"]] == OUTPUT_NAMES
    assert inputs == {
        "image_embed": ([1, 256, 64, 64], "float32"),
        "high_res_feats_0": ([1, 32, 256, 256], "float32"),
        "high_res_feats_1": ([1, 64, 128, 128], "float32"),
        "point_coords": (["num_prompts", "num_points", 2], "float32"),
        "point_labels": (["num_prompts", "num_points"], "int32"),
        "mask_input": (["num_prompts", 1, 256, 256], "float32"),
        "has_mask_input": (["num_prompts"], "float32"),
    }
    assert outputs == {
        "low_res_masks": (["num_prompts", 4, 256, 256], "float32"),
        "iou_predictions": (["num_prompts", 4], "float32"),
        "object_score_logits": (["num_prompts", 1], "float32"),
    }


def test_graph_has_no_forbidden_ops(exported: tuple[Path, dict]) -> None:
    path, report = exported
    census = op_census(path)
    assert report["op_census"] == census
    assert forbidden_ops(census) == []
    assert not {"OneHot", "Tile", "If", "Loop"} & set(census)


def test_parity_measured_at_export(exported: tuple[Path, dict]) -> None:
    parity = exported[1]["parity"]
    assert set(parity) == {"batch_1", "batch_7"}
    for errors in parity.values():
        assert set(errors) == set(OUTPUT_NAMES)
        assert max(errors.values()) <= TOLERANCE, errors


@pytest.mark.parametrize(
    ("prompt_count", "point_count", "boxes", "masks"),
    [
        pytest.param(1, 1, False, False, id="one-positive-point"),
        pytest.param(5, 1, False, False, id="points-only"),
        pytest.param(5, 4, False, False, id="points-with-negatives-and-padding"),
        pytest.param(5, 3, True, False, id="points-and-boxes"),
        pytest.param(6, 3, True, True, id="boxes-and-mask-input-on-some"),
    ],
)
def test_parity_with_sam2_modules(session, sam2_tiny, features, prompt_count, point_count, boxes, masks):
    prompts = random_prompts(
        prompt_count, point_count, seed=prompt_count + point_count, boxes=boxes, masks=masks
    )
    feeds = {**features, **prompts}
    errors = max_errors(run_graph(session, feeds), reference_for_prompts(sam2_tiny, feeds, feeds))
    assert max(errors.values()) <= TOLERANCE, errors


def test_mask_input_changes_only_the_prompts_that_use_it(session, features) -> None:
    feeds = {**features, **random_prompts(4, 2, seed=3, boxes=False, masks=True)}
    with_masks = run_graph(session, feeds)["low_res_masks"]
    without = run_graph(session, {**feeds, "has_mask_input": np.zeros(4, np.float32)})["low_res_masks"]
    changed = np.abs(with_masks - without).max(axis=(1, 2, 3))  # [4]
    assert feeds["has_mask_input"].tolist() == [1.0, 0.0, 1.0, 0.0]
    assert changed[0] > 1e-2 and changed[2] > 1e-2, changed
    assert changed[1] == 0.0 and changed[3] == 0.0, changed


def test_parity_64_prompts(session, sam2_tiny, features) -> None:
    """One call of 64 mixed prompts; rows checked against sam2 on a sample (each prompt is independent)."""
    feeds = {**features, **random_prompts(64, 3, seed=64)}
    outputs = run_graph(session, feeds)
    rows = np.array([0, 1, 2, 3, 30, 31, 62, 63])  # box / no box × mask / no mask, both ends of the batch
    sampled_prompts = {name: feeds[name][rows] for name in INPUT_NAMES if name not in features}
    expected = reference_for_prompts(sam2_tiny, features, sampled_prompts)
    errors = max_errors({name: value[rows] for name, value in outputs.items()}, expected)
    assert max(errors.values()) <= TOLERANCE, errors


@pytest.fixture(scope="module")
def predictor(sam2_tiny: Sam2Model):
    """sam2's image predictor on a 96×128 random image (real encoder features, 1024 input frame)."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    with warnings.catch_warnings():
        # sam2's transforms call torch.jit.script, deprecated in torch 2.14.
        warnings.filterwarnings(
            "ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning
        )
        sam2_predictor = SAM2ImagePredictor(sam2_tiny.module)
    with torch.inference_mode():
        image_u8 = np.random.default_rng(5).integers(0, 256, (96, 128, 3), dtype=np.uint8)
        sam2_predictor.set_image(image_u8)
    return sam2_predictor


@pytest.mark.parametrize(
    ("clicks", "click_labels", "box"),
    [
        pytest.param([[40.0, 30.0]], [1], None, id="one-point"),
        pytest.param([[40.0, 30.0], [100.0, 70.0]], [1, 0], None, id="point-and-negative"),
        pytest.param([[40.0, 30.0], [100.0, 70.0]], [1, 0], [20.0, 10.0, 110.0, 80.0], id="points-and-box"),
    ],
)
def test_matches_sam2_image_predictor(session, predictor, clicks, click_labels, box) -> None:
    """predict(..., multimask_output=True) in the image frame equals tokens 1..3 of the graph."""
    height, width = predictor._orig_hw[-1]
    coords, labels = np.array(clicks, np.float32), np.array(click_labels, np.int32)
    with torch.inference_mode():
        masks, iou, low_res = predictor.predict(coords, labels, box=box, multimask_output=True)

    if box is not None:
        coords = np.concatenate([np.array(box, np.float32).reshape(2, 2), coords])
        labels = np.concatenate([np.array([2, 3], np.int32), labels])
    coords_1024 = coords / np.array([width, height], np.float32) * np.float32(1024)
    features = predictor._features
    feeds = {
        "image_embed": features["image_embed"].numpy(),
        "high_res_feats_0": features["high_res_feats"][0].numpy(),
        "high_res_feats_1": features["high_res_feats"][1].numpy(),
        "point_coords": coords_1024[None],
        "point_labels": labels[None],
        "mask_input": np.zeros((1, 1, 256, 256), np.float32),
        "has_mask_input": np.zeros(1, np.float32),
    }
    outputs = run_graph(session, feeds)
    graph_low_res = outputs["low_res_masks"][0, 1:]  # [3, 256, 256]
    graph_iou = outputs["iou_predictions"][0, 1:]  # [3]
    # sam2 returns its low-res logits clamped to ±32; the graph leaves them raw.
    assert np.abs(np.clip(graph_low_res, -32.0, 32.0) - low_res).max() <= TOLERANCE
    assert np.abs(graph_iou - iou).max() <= TOLERANCE
    assert int(np.argmax(graph_iou)) == int(np.argmax(iou))
    upsampled = torch.nn.functional.interpolate(
        torch.from_numpy(graph_low_res[None]), (height, width), mode="bilinear", align_corners=False
    )[0].numpy()
    agreement = np.mean((upsampled > 0) == (masks > 0.5))
    assert agreement >= 0.9999, agreement
