"""The exported SCLIP image tower equals `SclipModel.encode_crops`, for any crop count, in one ONNX file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from clipsam.export.clip_model import SclipModel, load_sclip
from clipsam.export.onnx_sclip import export_sclip_tower
from clipsam.export.onnx_utils import forbidden_ops, io_specs, op_census

TOLERANCE = 1e-4  # fp32 max abs, issue 4


@pytest.fixture(scope="module")
def tiny_model(tiny_clip_checkpoint: Path) -> SclipModel:
    return load_sclip(tiny_clip_checkpoint)


@pytest.fixture(scope="module")
def tiny_export(tiny_model: SclipModel, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("sclip-onnx") / "sclip_tower.onnx"
    report = export_sclip_tower(tiny_model, path, crop=224)
    return path, report


def test_one_file_serves_one_and_five_crops(tiny_model: SclipModel, tiny_export: tuple[Path, dict]):
    path, _ = tiny_export
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(5)
    for count in (1, 5):
        crops = torch.randn(count, 3, 224, 224, generator=generator)
        (exported,) = session.run(["patch_features"], {"crops": crops.numpy()})
        with torch.inference_mode():
            expected = tiny_model.encode_crops(crops).numpy()
        assert exported.shape == expected.shape == (count, 196, 64)
        assert np.abs(exported - expected).max() <= TOLERANCE, count
        # L2-normalised per patch, as the text dot product downstream assumes
        np.testing.assert_allclose(np.linalg.norm(exported, axis=-1), 1.0, atol=1e-5)


def test_export_report_and_graph_interface(tiny_export: tuple[Path, dict]):
    path, report = tiny_export
    expected_specs = {
        "inputs": [{"name": "crops", "shape": ["num_crops", 3, 224, 224], "dtype": "float32"}],
        "outputs": [{"name": "patch_features", "shape": ["num_crops", 196, 64], "dtype": "float32"}],
    }
    assert io_specs(path) == expected_specs
    assert report["io_specs"] == expected_specs
    assert set(report["parity"]) == {"patch_features[N=1]", "patch_features[N=6]"}
    assert max(report["parity"].values()) <= TOLERANCE
    assert report["op_census"] == op_census(path)
    assert (report["crop"], report["patch"], report["embed_dim"]) == (224, 16, 64)


def test_graph_is_tensorrt_friendly(tiny_export: tuple[Path, dict]):
    census = op_census(tiny_export[0])
    assert forbidden_ops(census) == []
    # Nothing is sized from a runtime shape: the crop count flows through -1 reshapes only.
    assert not {"Shape", "Expand", "Where", "ConstantOfShape"} & set(census), census
    assert census["Softmax"] == 2 + 2  # 2 standard blocks + the CSA block's two softmaxes


def test_crop_must_be_a_multiple_of_the_patch(tiny_model: SclipModel, tmp_path: Path):
    with pytest.raises(ValueError, match="multiple of the patch size"):
        export_sclip_tower(tiny_model, tmp_path / "bad.onnx", crop=230)
    assert not (tmp_path / "bad.onnx").exists()


@pytest.mark.slow
def test_full_size_vit_b16(tmp_path: Path):
    model = load_sclip(None, random_weights=True, seed=0)
    report = export_sclip_tower(model, tmp_path / "sclip_vit_b16.onnx")
    assert report["io_specs"]["outputs"] == [
        {"name": "patch_features", "shape": ["num_crops", 196, 512], "dtype": "float32"}
    ]
    assert report["forbidden_ops"] == []
    assert report["op_census"]["Softmax"] == 11 + 2
    assert max(report["parity"].values()) <= TOLERANCE, report["parity"]
