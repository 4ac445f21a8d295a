"""The exported SAM2 image encoder gives what `SAM2ImagePredictor.set_image` stores (random SAM2.1 tiny)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from clipsam.export.onnx_sam2_encoder import export_sam2_encoder
from clipsam.export.onnx_utils import forbidden_ops, io_specs, op_census
from clipsam.export.sam2_model import Sam2Model
from tests.conftest import rng_image

TOLERANCE = 1e-4  # fp32 max abs, issue 4
EXPECTED_SPECS = {
    "inputs": [{"name": "image", "shape": [1, 3, 1024, 1024], "dtype": "float32"}],
    "outputs": [
        {"name": "image_embed", "shape": [1, 256, 64, 64], "dtype": "float32"},
        {"name": "high_res_feats_0", "shape": [1, 32, 256, 256], "dtype": "float32"},
        {"name": "high_res_feats_1", "shape": [1, 64, 128, 128], "dtype": "float32"},
    ],
}


@pytest.fixture(scope="module")
def exported(sam2_tiny: Sam2Model, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The one export of this module (the expensive step: ~40 s here)."""
    path = tmp_path_factory.mktemp("sam2-onnx") / "sam2_image_encoder.onnx"
    return path, export_sam2_encoder(sam2_tiny, path)


def test_matches_sam2_image_predictor_features(sam2_tiny: Sam2Model, exported: tuple[Path, dict]):
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    # The random no_mem_embed is far from zero, so a graph that left it out would miss image_embed by more
    # than the tolerance.
    assert sam2_tiny.module.directly_add_no_mem_embed
    assert float(sam2_tiny.module.no_mem_embed.detach().abs().max()) > 100 * TOLERANCE
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning
        )
        predictor = SAM2ImagePredictor(sam2_tiny.module)
    image = rng_image(40, 56, seed=3)  # not square: sam2 squashes it to 1024² itself
    with torch.inference_mode():
        predictor.set_image(image)
        preprocessed = predictor._transforms(image)[None].numpy()  # [1, 3, 1024, 1024], sam2's own transform
    session = ort.InferenceSession(str(exported[0]), providers=["CPUExecutionProvider"])
    names = ["image_embed", "high_res_feats_0", "high_res_feats_1"]
    outputs = dict(zip(names, session.run(names, {"image": preprocessed}), strict=True))
    expected = {
        "image_embed": predictor._features["image_embed"],
        "high_res_feats_0": predictor._features["high_res_feats"][0],
        "high_res_feats_1": predictor._features["high_res_feats"][1],
    }
    for name in names:
        assert outputs[name].shape == tuple(expected[name].shape), name
        error = float(np.abs(outputs[name] - expected[name].numpy()).max())
        assert error <= TOLERANCE, (name, error)


def test_export_report(exported: tuple[Path, dict]):
    path, report = exported
    assert io_specs(path) == EXPECTED_SPECS == report["io_specs"]
    assert set(report["parity"]) == {"image_embed", "high_res_feats_0", "high_res_feats_1"}
    assert max(report["parity"].values()) <= TOLERANCE, report["parity"]
    assert report["op_census"] == op_census(path)


def test_graph_is_tensorrt_friendly(exported: tuple[Path, dict]):
    census = op_census(exported[0])
    assert forbidden_ops(census) == []
    # Every size is static: no runtime shape arithmetic, and the neck's unused position encodings are gone.
    assert not {"Shape", "Gather", "Mod", "Sin", "Cos", "Range"} & set(census), census
    assert census["Softmax"] == 12  # one attention per Hiera block (tiny: 12 blocks)
