"""Exported artifacts: manifest integrity, the onnxruntime runtime against the torch reference, torch-free.

The `artifacts` fixture (conftest.py) exports once per session: golden tiny CLIP + SAM2.1 tiny, random seed 0.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from clipsam.engine.bench.demo_scene import demo_scene
from clipsam.engine.factory import load_pipeline, load_reference_pipeline
from clipsam.engine.manifest import MANIFEST_NAME, ArtifactError, read_manifest
from clipsam.engine.models.choice import ModelChoice
from clipsam.engine.pipeline import SegmentOptions, vocabulary_from_words
from clipsam.export.onnx_utils import forbidden_ops, op_census
from clipsam.kernels import rle as rle_codec

VOCAB = ["sky", "car", "road", "tree", "grass"]
OPTIONS = SegmentOptions(min_confidence=0.0, min_region_size=30, max_prompts=12)


@pytest.fixture(scope="session")
def image():
    return demo_scene(120, 160)


def _reference(tiny_clip_checkpoint):
    return load_reference_pipeline(ModelChoice(clip_checkpoint=tiny_clip_checkpoint, sam_random=True, seed=0))


def _decoded(result):
    return [
        rle_codec.decode({**s.rle, "counts": s.rle["counts"].encode()}).astype(bool) for s in result.segments
    ]


def test_manifest_records_everything(artifacts):
    manifest = read_manifest(artifacts)
    data = manifest.data
    assert data["random_weights"] is True and data["models"]["sam2"]["weights"] == "random-init, seed 0"
    assert data["models"]["sclip"]["weights"].startswith("sha256:")
    for name in ("sclip_tower", "sam2_encoder", "sam2_decoder"):
        graph = data["graphs"][name]
        assert graph["opset"] >= 17 and graph["sha256"] and graph["inputs"] and graph["outputs"]
        assert forbidden_ops(op_census(manifest.graph_path(name))) == []
    decoder_inputs = {spec["name"]: spec for spec in data["graphs"]["sam2_decoder"]["inputs"]}
    assert decoder_inputs["point_labels"]["dtype"] == "int32"
    assert decoder_inputs["point_coords"]["shape"][:2] == ["num_prompts", "num_points"]
    assert data["graphs"]["sam2_encoder"]["preprocessing"]["size"] == 1024
    assert {"torch", "onnx", "onnxruntime", "sam2"} <= set(data["versions"])


def test_tampered_partial_and_foreign_artifacts_are_refused(artifacts, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(artifacts, copy)
    decoder = copy / "sam2_decoder.onnx"
    decoder.write_bytes(decoder.read_bytes()[:-10])
    with pytest.raises(ArtifactError, match="does not match its manifest"):
        read_manifest(copy)
    (copy / MANIFEST_NAME).unlink()
    with pytest.raises(ArtifactError, match="no manifest.json"):
        read_manifest(copy)
    shutil.copy(artifacts / MANIFEST_NAME, copy / MANIFEST_NAME)
    record = json.loads((copy / MANIFEST_NAME).read_text())
    record["format_version"] = 99
    (copy / MANIFEST_NAME).write_text(json.dumps(record))
    with pytest.raises(ArtifactError, match="format 99"):
        read_manifest(copy)


def test_onnxruntime_segments_equal_torch_reference(artifacts, image, tiny_clip_checkpoint):
    vocabulary = vocabulary_from_words(VOCAB)
    ours = load_pipeline(artifacts).segment(image, vocabulary, OPTIONS)
    reference = _reference(tiny_clip_checkpoint).segment(image, vocabulary, OPTIONS)
    assert len(ours.segments) == len(reference.segments) > 0
    assert [s.class_id for s in ours.segments] == [s.class_id for s in reference.segments]
    for mine, theirs in zip(_decoded(ours), _decoded(reference), strict=True):
        iou = (mine & theirs).sum() / max((mine | theirs).sum(), 1)
        assert iou >= 0.999
    assert ours.models["backend"] == "onnxruntime" and "CPUExecutionProvider" in ours.models["providers"]
    assert ours.models["decoder"] == "fast"


def test_runtime_works_without_torch(artifacts, image, tmp_path):
    """A full segment run from artifacts in a process where `import torch` fails."""
    np.save(tmp_path / "image.npy", image)
    script = textwrap.dedent(
        f"""
        import sys, json, importlib.abc
        class BlockTorch(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] in ("torch", "sam2", "open_clip", "torchvision"):
                    raise ImportError("torch is blocked in this test")
        sys.meta_path.insert(0, BlockTorch())
        import numpy as np
        from clipsam import SegmentOptions, load_pipeline, vocabulary_from_words
        pipeline = load_pipeline({str(artifacts)!r})
        result = pipeline.segment(np.load({str(tmp_path / "image.npy")!r}), vocabulary_from_words({VOCAB!r}),
                                  SegmentOptions(min_confidence=0.0, min_region_size=30, max_prompts=12))
        assert "torch" not in sys.modules
        print(json.dumps([[s.class_id, s.area, s.rle["counts"]] for s in result.segments]))
        """
    )
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600, env=env
    )
    assert done.returncode == 0, done.stderr
    segments = json.loads(done.stdout.strip().splitlines()[-1])
    expected = load_pipeline(artifacts).segment(image, vocabulary_from_words(VOCAB), OPTIONS)
    assert segments == [[s.class_id, s.area, s.rle["counts"]] for s in expected.segments]


def test_verify_passes_on_fresh_export(artifacts, tiny_clip_checkpoint):
    from clipsam.export.verify_checks import verify_artifacts

    report = verify_artifacts(artifacts, clip_checkpoint=tiny_clip_checkpoint, prompt_count=6)
    assert report.failures == []
    assert report.mask_iou.min() >= 0.999 and report.agreement.min() >= 0.9999
    assert report.fast_mask_iou.size == 6 and report.fast_mask_iou.min() >= 0.999
    assert report.max_abs["sam2_fast_decoder.low_res_masks (random prompts)"] <= 1e-4
    assert any("from uint8" in name for name in report.max_abs)
    assert report.max_abs["text_features[N=17,L=77]"] <= 1e-4  # the text graph's parity
