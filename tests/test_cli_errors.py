"""Every bad input a user can give: one clear stderr line, a non-zero exit, no traceback, no output file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.cli_helpers import assert_one_line_error, run_cli, run_cli_subprocess

VOCAB = ["--vocabulary", "sky", "--vocabulary", "car"]


def _segment(image: Path, out_dir: Path, *extra: str) -> list[str]:
    return ["segment", "--image", image, *VOCAB, "--output", out_dir / "o.png", "--random-weights", *extra]


def _assert_no_outputs(out_dir: Path) -> None:
    leftovers = [p.name for p in out_dir.iterdir() if p.name.startswith(("o.", ".o.", "r.", ".r."))]
    assert leftovers == [], leftovers


@pytest.fixture()
def out_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def _bad_image(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.png"
    if kind == "directory":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "not_image":
        path.write_text("hello")
    elif kind == "truncated":
        noise = np.random.default_rng(1).integers(0, 255, (80, 80, 3), np.uint8)
        Image.fromarray(noise).save(path)
        path.write_bytes(path.read_bytes()[:300])
    return path


@pytest.mark.parametrize(
    ("kind", "fragment"),
    [
        ("missing", "does not exist"),
        ("directory", "is a directory"),
        ("empty", "empty"),
        ("not_image", "not an image"),
        ("truncated", "truncated"),
    ],
)
def test_bad_image(tmp_path, out_dir, capsys, kind, fragment):
    code, _, err = run_cli(_segment(_bad_image(tmp_path, kind), out_dir), capsys)
    assert_one_line_error(code, err, fragment)
    _assert_no_outputs(out_dir)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--vocabulary", "car", "--vocabulary", "Car"], "duplicate class name"),
        (["--vocabulary", "car", "--prompt", "dog"], "not in the vocabulary"),
        (["--vocabulary", "car", "--edit", "remove"], "needs --prompt"),
        (["--vocabulary", "car", "--min-confidence", "-0.1"], "min-confidence"),
        (["--vocabulary", "car", "--min-confidence", "1.5"], "min-confidence"),
        (["--vocabulary", "car", "--iou-threshold", "2"], "iou-threshold"),
        (["--vocabulary", "car", "--min-region-size", "-5"], "min-region-size"),
        (["--vocabulary", "car", "--backend", "tensorflow"], "unknown backend"),
        (["--vocabulary", "car", "--sam-model", "sam3-giant"], "unknown model"),
        (["--vocabulary", "car", "--model-cfg", "configs/x.yaml"], "unknown --model-cfg"),
        ([], "vocabulary is empty"),
        (["--vocabulary", "car", "--edit", "paint"], "--edit"),
        (["--vocabulary", "car", "--precision", "fp4"], "unknown precision"),
        (
            ["--vocabulary", "car", "--precision", "fast", "--backend", "torch"],
            "--precision fast runs on the CPU",
        ),
    ],
    ids=[
        "duplicate",
        "prompt-not-in-vocab",
        "remove-without-prompt",
        "negative-confidence",
        "confidence-above-one",
        "iou-out-of-range",
        "negative-region-size",
        "unknown-backend",
        "unknown-sam-model",
        "unknown-model-cfg",
        "empty-vocabulary",
        "unknown-edit",
        "unknown-precision",
        "fast-precision-on-torch",
    ],
)
def test_bad_arguments(street_image, out_dir, capsys, args, fragment):
    command = ["segment", "--image", street_image, "--output", out_dir / "o.png", "--random-weights", *args]
    code, _, err = run_cli(command, capsys)
    assert_one_line_error(code, err, fragment)
    _assert_no_outputs(out_dir)


def test_empty_class_file(street_image, tmp_path, out_dir, capsys):
    class_file = tmp_path / "classes.txt"
    class_file.write_text("")
    command = ["segment", "--image", street_image, "--class-file", class_file, "--output", out_dir / "o.png"]
    code, _, err = run_cli([*command, "--random-weights"], capsys)
    assert_one_line_error(code, err, "empty")


@pytest.mark.parametrize(
    ("output", "fragment"),
    [("missing/o.png", "does not exist"), ("o.txt", "must end with"), (".", "directory")],
)
def test_unwritable_output(street_image, out_dir, capsys, output, fragment):
    command = ["segment", "--image", street_image, *VOCAB, "--output", out_dir / output, "--random-weights"]
    code, _, err = run_cli(command, capsys)
    assert_one_line_error(code, err, fragment)


def test_output_in_unwritable_place(street_image, capsys):
    command = [
        "segment",
        "--image",
        street_image,
        *VOCAB,
        "--output",
        "/proc/clipsam-o.png",
        "--random-weights",
    ]
    code, _, err = run_cli(command, capsys)
    assert_one_line_error(code, err, "cannot write")


def test_missing_checkpoints_without_random_weights(street_image, out_dir, capsys):
    command = ["segment", "--image", street_image, *VOCAB, "--output", out_dir / "o.png"]
    code, _, err = run_cli(command, capsys)
    assert_one_line_error(code, err, "clipsam download sclip-vit-b16")


def test_explicit_checkpoint_missing(street_image, out_dir, tiny_clip_checkpoint, capsys):
    command = [
        *_segment(street_image, out_dir)[:-1],
        "--clip-checkpoint",
        tiny_clip_checkpoint,
        "--checkpoint",
        out_dir / "nope.pt",
    ]
    code, _, err = run_cli(command, capsys)
    assert_one_line_error(code, err, "does not exist")
    _assert_no_outputs(out_dir)


def test_corrupt_sam2_checkpoint(street_image, out_dir, tiny_clip_checkpoint, capsys):
    corrupt = out_dir.parent / "corrupt.pt"
    corrupt.write_bytes(b"PK\x03\x04 this is not a zip archive")
    command = [
        *_segment(street_image, out_dir)[:-1],
        "--clip-checkpoint",
        tiny_clip_checkpoint,
        "--checkpoint",
        corrupt,
    ]
    code, _, err = run_cli(command, capsys)
    assert_one_line_error(code, err, "corrupt")
    _assert_no_outputs(out_dir)


def test_checkpoint_of_another_model(street_image, out_dir, tiny_clip_checkpoint, capsys):
    """A CLIP file given as the SAM2 checkpoint: the message names the file and the SAM2 architecture."""
    command = [
        *_segment(street_image, out_dir)[:-1],
        "--clip-checkpoint",
        tiny_clip_checkpoint,
        "--checkpoint",
        tiny_clip_checkpoint,
    ]
    code, _, err = run_cli(command, capsys)
    assert_one_line_error(code, err, "does not match architecture")
    assert "sam2.1-hiera-tiny" in err and tiny_clip_checkpoint.name in err
    _assert_no_outputs(out_dir)


def test_corrupt_clip_checkpoint(street_image, out_dir, capsys):
    corrupt = out_dir.parent / "clip.pt"
    corrupt.write_bytes(b"\x80\x02garbage")
    command = ["segment", "--image", street_image, *VOCAB, "--output", out_dir / "o.png"]
    code, _, err = run_cli([*command, "--clip-checkpoint", corrupt, "--checkpoint", corrupt], capsys)
    assert_one_line_error(code, err, "corrupt")


def test_shell_sees_one_line_and_exit_2(tmp_path):
    """The real console entry point, as a user's shell runs it."""
    result = run_cli_subprocess(["segment", "--image", tmp_path / "none.png", "--vocabulary", "cat"])
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert result.stderr.startswith("clipsam: error: image")
