"""TensorRT engines built from the real exported graphs, run through the tensorrt backend against onnxruntime.

Needs the tensorrt Python module, cuda-python and an NVIDIA GPU: skipped (with the reason) where any is
missing; nothing stands in for TensorRT. The TensorRT-free logic (profiles, fp32 layer selection, mismatch
messages, profile choice) is tested in test_trt_readiness.py, which runs everywhere.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed here (pip install '.[gpu]' on a GPU)")

from clipsam.engine.backends.onnxruntime import OrtGraph  # noqa: E402
from clipsam.engine.backends.tensorrt import (  # noqa: E402
    EngineMismatchError,
    TrtGraph,
    engine_entry,
    gpu_identity,
    import_cudart,
)
from clipsam.engine.errors import ClipsamError  # noqa: E402
from clipsam.engine.manifest import MANIFEST_NAME, read_manifest  # noqa: E402
from clipsam.export.trt_build import TIMING_CACHE_NAME, build_engines  # noqa: E402

BUILT = ("sclip_tower", "sam2_decoder")  # the encoder takes minutes to build; its path is the same code


@pytest.fixture(scope="session")
def gpu():
    try:
        return gpu_identity(import_cudart())
    except ClipsamError as err:
        pytest.skip(f"no usable CUDA device or cuda-python here: {err}")


@pytest.fixture(scope="session")
def engines(tmp_path_factory, tiny_clip_checkpoint, gpu):
    from clipsam.export.build import ExportRequest, export_artifacts

    out = tmp_path_factory.mktemp("trt-engines")
    export_artifacts(
        ExportRequest(out, clip_checkpoint=tiny_clip_checkpoint, sam_random=True, seed=0), log=print
    )
    build_engines(out, graphs=BUILT, workspace_gib=2.0)
    return out


def _decoder_feeds(num_prompts: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "image_embed": rng.standard_normal((1, 256, 64, 64), dtype=np.float32),
        "high_res_feats_0": rng.standard_normal((1, 32, 256, 256), dtype=np.float32),
        "high_res_feats_1": rng.standard_normal((1, 64, 128, 128), dtype=np.float32),
        "point_coords": rng.uniform(0, 1024, (num_prompts, 2, 2)).astype(np.float32),
        "point_labels": np.tile(np.array([[1, 0]], dtype=np.int32), (num_prompts, 1)),
        "mask_input": np.zeros((num_prompts, 1, 256, 256), np.float32),
        "has_mask_input": np.zeros(num_prompts, np.float32),
    }


def test_manifest_records_engines(engines, gpu):
    section = read_manifest(engines).data["engines"]
    assert section["tensorrt_version"] == trt.__version__
    assert section["gpu"] == {"name": gpu.name, "compute_capability": gpu.compute_capability}
    assert set(section["graphs"]) == set(BUILT) and (engines / TIMING_CACHE_NAME).stat().st_size > 0
    decoder = section["graphs"]["sam2_decoder"]
    assert decoder["profiles"][0]["point_labels"] == [[1, 1], [64, 3], [512, 8]]
    assert decoder["fp32_layers"] > 0


@pytest.mark.parametrize("num_prompts", [1, 37, 512])
def test_decoder_engine_matches_onnxruntime(engines, num_prompts):
    manifest = read_manifest(engines)
    feeds = _decoder_feeds(num_prompts, np.random.default_rng(num_prompts))
    engine = TrtGraph(engines / "sam2_decoder.engine", engine_entry(manifest, "sam2_decoder"))
    ours = engine.run(feeds)
    reference = OrtGraph(manifest.graph_path("sam2_decoder"), ["CPUExecutionProvider"]).run(feeds)
    assert ours["low_res_masks"].shape == (num_prompts, 4, 256, 256)
    agreement = np.mean((ours["low_res_masks"] > 0) == (reference["low_res_masks"] > 0))
    assert agreement >= 0.99, f"fp16 engine mask sign agreement {agreement:.4f}"
    np.testing.assert_allclose(ours["iou_predictions"], reference["iou_predictions"], atol=0.05)


def test_sclip_engine_matches_onnxruntime(engines):
    manifest = read_manifest(engines)
    crops = np.random.default_rng(0).standard_normal((6, 3, 224, 224), dtype=np.float32)
    ours = TrtGraph(engines / "sclip_tower.engine", engine_entry(manifest, "sclip_tower")).run(
        {"crops": crops}
    )
    reference = OrtGraph(manifest.graph_path("sclip_tower"), ["CPUExecutionProvider"]).run({"crops": crops})
    cosine = np.sum(ours["patch_features"] * reference["patch_features"], axis=-1)
    assert cosine.min() >= 0.995


def test_engine_of_other_tensorrt_or_gpu_is_refused(engines, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(engines, copy)
    data = json.loads((copy / MANIFEST_NAME).read_text())
    data["engines"]["tensorrt_version"] = "0.0.1"
    (copy / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(EngineMismatchError, match="built with TensorRT 0.0.1"):
        TrtGraph(copy / "sam2_decoder.engine", engine_entry(read_manifest(copy), "sam2_decoder"))
    data["engines"]["tensorrt_version"] = trt.__version__
    data["engines"]["gpu"]["name"] = "Some Other GPU"
    (copy / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(EngineMismatchError, match="was built for Some Other GPU"):
        TrtGraph(copy / "sam2_decoder.engine", engine_entry(read_manifest(copy), "sam2_decoder"))


def test_partial_engine_file_is_refused(engines, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(engines, copy)
    engine_file = copy / "sam2_decoder.engine"
    engine_file.write_bytes(engine_file.read_bytes()[:-100])
    with pytest.raises(EngineMismatchError, match="does not match its manifest entry"):
        TrtGraph(engine_file, engine_entry(read_manifest(copy), "sam2_decoder"))
