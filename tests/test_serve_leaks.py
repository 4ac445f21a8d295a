"""The last one-line-error leaks of issue 27, each through the CLI (or the library edge it goes through):
exit code, exactly one `clipsam:` line on stderr, no file left behind."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipsam.engine.errors import ClipsamError
from tests.cli_helpers import run_cli
from tests.reliability_helpers import assert_folder_holds, assert_single_line, small_png
from tests.serve_helpers import free_port


def torchscript_archive() -> bytes:
    stream = io.BytesIO()
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), stream)
    return stream.getvalue()


@pytest.mark.parametrize("verbose", [False, True])
def test_a_torchscript_sam2_checkpoint_is_one_line_and_its_warning_waits_for_v(
    tmp_path, capsys, tiny_clip_checkpoint, verbose
):
    checkpoint = tmp_path / "sam2.pt"
    checkpoint.write_bytes(torchscript_archive())
    image = small_png(tmp_path / "in.png")
    args = ["segment", "--backend", "torch", "--image", image, "-V", "sky"]
    args += ["--clip-checkpoint", tiny_clip_checkpoint, "--checkpoint", checkpoint, "-o", tmp_path / "o.png"]
    code, _, err = run_cli([*args, "-v"] if verbose else args, capsys)
    if verbose:  # the warning is torch's, shown as torch's, and only here
        assert code == 2 and "looks like a TorchScript archive" in err and "clipsam: warning" not in err
    else:
        assert_single_line(code, err, 2, "clipsam: error: SAM2 checkpoint ", "TorchScript")
    assert_folder_holds(tmp_path, {"sam2.pt", "in.png"})


def test_points_honour_max_pixels(tmp_path, capsys, artifacts):
    image = small_png(tmp_path / "in.png")  # 48 × 64 = 3,072 pixels
    args = ["segment", "--artifacts", artifacts, "--image", image, "--points", "5,5"]
    code, _, err = run_cli([*args, "--max-pixels", "3000", "-o", tmp_path / "o.png"], capsys)
    assert_single_line(code, err, 2, "clipsam: error: ", "more than the limit of 3,000")
    assert_folder_holds(tmp_path, {"in.png"})
    code, _, err = run_cli([*args, "--max-pixels", "3072", "-o", tmp_path / "o.png"], capsys)
    assert code == 0, err  # at the limit: accepted


@pytest.mark.parametrize("extra", [["--artifacts", "ARTIFACTS"], ["--backend", "onnxruntime"]])
def test_server_with_artifacts_or_backend_is_one_line(tmp_path, capsys, artifacts, extra):
    image = small_png(tmp_path / "in.png")
    extra = [str(artifacts) if value == "ARTIFACTS" else value for value in extra]
    server = f"http://127.0.0.1:{free_port()}"  # never reached: the options are refused first
    args = ["segment", "--server", server, "--image", image, "-V", "sky", *extra, "-o", tmp_path / "o.png"]
    code, _, err = run_cli(args, capsys)
    assert_single_line(code, err, 2, "clipsam: error: ", f"drop {extra[0]}, or drop --server")
    assert_folder_holds(tmp_path, {"in.png"})


# --strength has a closed range, so the option parser refuses nan itself (nan <= 1 is false); the
# unbounded-above --guidance-scale lets inf through to clipsam's own check.
@pytest.mark.parametrize(
    "flag, value, says",
    [
        ("--guidance-scale", "inf", "--guidance-scale must be a finite number"),
        ("--strength", "nan", "Invalid value for '--strength'"),
    ],
)
def test_non_finite_inpainting_numbers_are_one_line(tmp_path, capsys, artifacts, flag, value, says):
    image = small_png(tmp_path / "in.png")
    args = ["segment", "--artifacts", artifacts, "--image", image, "-V", "sky", flag, value]
    code, _, err = run_cli([*args, "-o", tmp_path / "o.png"], capsys)
    assert_single_line(code, err, 2, "clipsam: error: ", says)
    assert_folder_holds(tmp_path, {"in.png"})


def test_eval_labels_are_refused_above_the_pixel_limit_from_the_header(tmp_path, monkeypatch):
    from clipsam.engine.eval import datasets

    label = tmp_path / "label.png"
    Image.fromarray(np.zeros((40, 50), np.uint8)).save(label)
    monkeypatch.setattr(datasets, "DEFAULT_MAX_PIXELS", 1999)
    decoded = []
    monkeypatch.setattr(datasets.np, "asarray", lambda *a, **k: decoded.append(1) or np.asarray(*a, **k))
    spec = datasets.get_spec(datasets.dataset_names()[0])
    dataset = datasets.BenchmarkDataset(spec, tmp_path, [datasets.Sample("x", label, label)])
    with pytest.raises(ClipsamError) as caught:
        dataset.load_label(dataset.samples[0])
    message = str(caught.value)
    assert "50×40 = 2,000 pixels, more than the limit of 1,999" in message and "\n" not in message
    assert not decoded  # refused before the pixels were decoded


def test_an_export_on_a_corrupt_checkpoint_keeps_the_old_manifest(tmp_path, capsys, artifacts):
    folder = tmp_path / "export"
    folder.mkdir()
    manifest = (artifacts / "manifest.json").read_text()
    (folder / "manifest.json").write_text(manifest)
    corrupt = tmp_path / "clip.pt"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    args = ["export", "--out", folder, "--only", "sclip", "--clip-checkpoint", corrupt]
    code, _, err = run_cli(args, capsys)
    assert_single_line(code, err, 2, "clipsam: error: CLIP checkpoint ", "corrupt")
    assert_folder_holds(folder, {"manifest.json"})
    assert json.loads((folder / "manifest.json").read_text()) == json.loads(manifest)
    assert Path(corrupt).read_bytes().startswith(b"PK")
