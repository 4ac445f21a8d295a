"""`clipsam segment` on exported artifacts, and with inpainting edits (random weights, no download)."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from tests.cli_helpers import assert_one_line_error, run_cli

VOCAB = ["--vocabulary", "sky", "--vocabulary", "car", "--vocabulary", "road"]
LOW = ["--min-confidence", "0", "--min-region-size", "20", "--max-prompts", "4"]


def test_segment_on_onnxruntime_artifacts(artifacts, street_image, tmp_path, capsys):
    out, record_path = tmp_path / "o.png", tmp_path / "o.json"
    args = [
        "segment",
        "--image",
        street_image,
        *VOCAB,
        *LOW,
        "--backend",
        "onnxruntime",
        "--artifacts",
        artifacts,
    ]
    code, stdout, err = run_cli([*args, "--output", out, "--json", record_path], capsys)
    assert code == 0, err
    record = json.loads(record_path.read_text())
    assert record["models"]["backend"] == "onnxruntime" and record["random_weights"] is True
    assert "RANDOM WEIGHTS" in stdout and out.is_file()


def test_backend_option_errors(street_image, tmp_path, artifacts, capsys):
    base = ["segment", "--image", street_image, *VOCAB, "--output", tmp_path / "o.png"]
    code, _, err = run_cli([*base, "--backend", "onnxruntime"], capsys)  # the engine of the named weights
    assert_one_line_error(code, err, "or use --random-weights")
    code, _, err = run_cli([*base, "--backend", "torch", "--artifacts", artifacts], capsys)
    assert_one_line_error(code, err, "not --backend torch")
    code, _, err = run_cli([*base, "--backend", "onnxruntime", "--artifacts", tmp_path], capsys)
    assert_one_line_error(code, err, "no manifest.json")
    assert not (tmp_path / "o.png").exists()


def test_inpainting_replace_end_to_end_with_random_weights(street_image, tmp_path, capsys):
    out = tmp_path / "edit.png"
    args = ["segment", "--image", street_image, *VOCAB, *LOW, "--random-weights", "--output", out]
    args += ["--edit", "replace", "--prompt", "car", "--use-inpainting", "--edit-prompt", "a red sports car"]
    code, _, err = run_cli([*args, "--steps", "2", "--json", tmp_path / "e.json"], capsys)
    assert code == 0, err
    edited = np.asarray(Image.open(out))
    original = np.asarray(Image.open(street_image))
    assert edited.shape == original.shape
    record = json.loads((tmp_path / "e.json").read_text())
    if any(s["class_name"] == "car" for s in record["segments"]):
        assert (edited != original).any()
    else:  # no car segment: nothing to repaint, the picture is the input
        np.testing.assert_array_equal(edited, original)


def test_inpainting_option_errors(street_image, tmp_path, capsys):
    base = ["segment", "--image", street_image, *VOCAB, "--random-weights", "--output", tmp_path / "o.png"]
    cases = [
        (["--use-inpainting"], "--edit remove or --edit replace"),
        (["--use-inpainting", "--edit", "replace", "--prompt", "car"], "--edit-prompt"),
        (["--edit-prompt", "sunset"], "needs --use-inpainting"),
        (["--use-inpainting", "--edit", "remove", "--prompt", "car", "--strength", "0"], "strength"),
    ]
    for extra, fragment in cases:
        code, _, err = run_cli([*base, *extra], capsys)
        assert_one_line_error(code, err, fragment)
    assert not (tmp_path / "o.png").exists()
