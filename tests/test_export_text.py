"""The exported text tower (`text_encoder.onnx`) equals open_clip's encode path, for any prompt count and
length, in one ONNX file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from clipsam.engine.text.bank import OPENAI_IMAGENET_TEMPLATES
from clipsam.export.clip_model import SclipModel, load_sclip
from clipsam.export.onnx_text import (
    INPUT_NAME,
    OUTPUT_NAME,
    export_text_encoder,
    reference_text_features,
)
from clipsam.export.trt_readiness import check_graph

TOLERANCE = 1e-4  # fp32 max abs, issue 16
WORDS = ("cat", "fire hydrant", "Stephen Curry", "ünïcode 東京", "a, b; c!", "")


@pytest.fixture(scope="module")
def tiny_model(tiny_clip_checkpoint: Path) -> SclipModel:
    return load_sclip(tiny_clip_checkpoint)


@pytest.fixture(scope="module")
def tiny_export(tiny_model: SclipModel, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("text-onnx") / "text_encoder.onnx"
    return path, export_text_encoder(tiny_model, path)


def _run(path: Path, tokens: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (features,) = session.run([OUTPUT_NAME], {INPUT_NAME: tokens.numpy().astype(np.int32)})
    return features


def _prompts(count: int) -> list[str]:
    return [template.format(word) for word in WORDS for template in OPENAI_IMAGENET_TEMPLATES][:count]


def test_report_and_signature(tiny_export: tuple[Path, dict]):
    _, report = tiny_export
    assert report["io_specs"] == {
        "inputs": [{"name": "tokens", "shape": ["num_texts", "text_length"], "dtype": "int32"}],
        "outputs": [{"name": "text_features", "shape": ["num_texts", 64], "dtype": "float32"}],
    }
    assert report["forbidden_ops"] == [] and report["op_census"]["ArgMax"] == 1
    assert set(report["parity"]) == {"text_features[N=16,L=15]", "text_features[N=17,L=77]"}
    assert max(report["parity"].values()) <= TOLERANCE, report["parity"]


@pytest.mark.parametrize("count", [1, 7, 80, 300])
def test_graph_equals_torch_at_any_count(tiny_model, tiny_export, count: int):
    path, _ = tiny_export
    tokens = tiny_model.tokenize(_prompts(count))  # int64 [count, 77]
    expected = reference_text_features(tiny_model, tokens)
    cut = int(tokens.argmax(dim=-1).max()) + 1
    for fed in (tokens, tokens[:, :cut]):
        features = _run(path, fed)
        assert features.shape == expected.shape == (count, 64)
        assert np.abs(features - expected).max() <= TOLERANCE
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, atol=1e-5)


def test_truncated_text_and_padding_after_eot(tiny_model, tiny_export):
    """A text cut to the full context (EOT forced last) is read at slot 76; whatever follows a row's EOT
    (here: random ids below the EOT id instead of zeros) changes nothing: the tower is causal."""
    path, _ = tiny_export
    tokens = tiny_model.tokenize(["tree " * 200, "cat", "a photo of a dog."])
    assert tokens[0, -1] == tokens.max()
    expected = reference_text_features(tiny_model, tokens)
    assert np.abs(_run(path, tokens) - expected).max() <= TOLERANCE
    noisy = tokens.clone()
    generator = torch.Generator().manual_seed(3)
    for row in (1, 2):
        after = int(noisy[row].argmax()) + 1
        noisy[row, after:] = torch.randint(1, 49000, (77 - after,), generator=generator)
    assert np.abs(_run(path, noisy) - _run(path, tokens)).max() <= 1e-6


def test_graph_is_tensorrt_ready(tiny_export):
    path, _ = tiny_export
    report = check_graph(path, "text_encoder")
    assert report.ready, report.lines()


@pytest.mark.slow
def test_full_size_vit_b16_text_tower(tmp_path: Path):
    model = load_sclip(None, random_weights=True, seed=0)
    report = export_text_encoder(model, tmp_path / "text_encoder.onnx")
    assert report["io_specs"]["outputs"][0]["shape"] == ["num_texts", 512]
    assert report["forbidden_ops"] == [] and report["op_census"]["Softmax"] == 12
    assert max(report["parity"].values()) <= TOLERANCE, report["parity"]
    tokens = model.tokenize(_prompts(160))
    features = _run(tmp_path / "text_encoder.onnx", tokens)
    assert np.abs(features - reference_text_features(model, tokens)).max() <= TOLERANCE
