"""`clipsam export` per model: `--only sclip`, which model needs which file, and per-model provenance in the
manifest, the segment JSON, the CLI's messages and the overlay legend."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from clipsam.engine.errors import ClipsamError
from tests.cli_helpers import assert_one_line_error, run_cli

SAM = "sam2.1-hiera-tiny"


@pytest.fixture(scope="module")
def sclip_only(tmp_path_factory: pytest.TempPathFactory, tiny_clip_checkpoint: Path) -> Path:
    """`clipsam export --only sclip --clip-checkpoint TINY --out B`, once (no SAM2 anywhere)."""
    from clipsam.cli.app import main

    out = tmp_path_factory.mktemp("sclip-only")
    with pytest.raises(SystemExit) as info:
        main(["export", "--only", "sclip", "--clip-checkpoint", str(tiny_clip_checkpoint), "--out", str(out)])
    assert info.value.code == 0
    return out


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_sclip_only_folder(sclip_only, tiny_clip_checkpoint, street_image, tmp_path, capsys):
    from clipsam.engine.bench.demo_scene import demo_scene
    from clipsam.engine.factory import load_pipeline
    from clipsam.engine.pipeline import vocabulary_from_words

    data = json.loads((sclip_only / "manifest.json").read_text())
    assert list(data["models"]) == ["sclip"]
    assert list(data["graphs"]) == ["sclip_tower", "sclip_tower_regions", "text_encoder"]
    entry = data["models"]["sclip"]
    assert entry["random_weights"] is False and entry["weights"] == f"sha256:{_sha256(tiny_clip_checkpoint)}"
    assert data["random_weights"] is False and (sclip_only / data["text_features"]["dir"]).is_dir()
    assert not list(sclip_only.glob("sam2*"))
    pipeline = load_pipeline(sclip_only)
    dense = pipeline.dense(demo_scene(64, 96), vocabulary_from_words(["sky", "road"]))
    assert dense.probs.shape == (2, 64, 96) and np.isfinite(dense.probs).all()
    out = tmp_path / "o.png"
    base = ["segment", "--image", street_image, "--output", out, "--backend", "onnxruntime"]
    for extra in (["--vocabulary", "sky", "--vocabulary", "road"], ["--points", "5,5"]):
        code, _, err = run_cli([*base, "--artifacts", sclip_only, *extra], capsys)
        assert_one_line_error(code, err, "no SAM2 graphs")
    assert not out.exists()


def test_export_says_which_model_lacks_weights(tmp_path, capsys):
    out = tmp_path / "art"
    cases = [
        ([], "no SCLIP checkpoint for sclip-vit-b16"),
        (["--model", SAM], f"no SAM2 checkpoint for {SAM}"),
        (["--only", "sam2"], "--only sclip"),
        (["--only", "sclip"], "--random-weights"),
        (["--only", "sam2", "--clip-checkpoint", tmp_path / "c.pt"], "--clip-checkpoint is for SCLIP"),
        (["--only", "sclip", "--checkpoint", tmp_path / "s.pt"], "--checkpoint is for SAM2"),
        (["--only", "sam2", "--vocabulary", "cat"], "--vocabulary is for SCLIP"),
        (["--only", "sclip", "--model", SAM], "--only sclip leaves out sam2"),
        (["--only", "clip"], "unknown --only 'clip'"),
    ]
    for extra, fragment in cases:
        code, _, err = run_cli(["export", "--out", out, *extra], capsys)
        assert_one_line_error(code, err, fragment)
    code, _, err = run_cli(["export", "--out", out], capsys)
    assert "--only sam2" in err and "--clip-checkpoint FILE" in err  # every way out is named
    assert not (out / "manifest.json").exists()


def test_mixed_provenance_in_manifest_messages_and_json(
    artifacts, tiny_clip_checkpoint, street_image, tmp_path, capsys
):
    """The session export: CLIP from the tiny checkpoint file, SAM2 seeded random."""
    from clipsam.cli.commands_export import _print_export

    data = json.loads((artifacts / "manifest.json").read_text())
    clip, sam = data["models"]["sclip"], data["models"]["sam2"]
    assert clip["random_weights"] is False and clip["weights"] == f"sha256:{_sha256(tiny_clip_checkpoint)}"
    assert sam["random_weights"] is True and sam["weights"] == "random-init, seed 0" and sam["seed"] == 0
    assert data["random_weights"] is True  # the derived summary: any model random
    capsys.readouterr()
    _print_export(artifacts, data)
    printed = capsys.readouterr()
    assert f"SCLIP sclip-vit-b16: sha256:{_sha256(tiny_clip_checkpoint)}" in printed.out
    assert f"SAM2 {SAM}: random weights, seed 0" in printed.out
    assert "SAM2 random weights" in printed.err and "SCLIP random" not in printed.err
    record_path = tmp_path / "o.json"
    args = ["segment", "--image", street_image, "--vocabulary", "sky", "--vocabulary", "road"]
    args += [
        "--min-confidence",
        "0",
        "--max-prompts",
        "2",
        "--backend",
        "onnxruntime",
        "--artifacts",
        artifacts,
    ]
    code, stdout, err = run_cli([*args, "--output", tmp_path / "o.png", "--json", record_path], capsys)
    assert code == 0, err
    record = json.loads(record_path.read_text())
    assert record["models"]["clip"]["random_weights"] is False
    assert record["models"]["sam2"]["random_weights"] is True and record["random_weights"] is True
    assert "[RANDOM WEIGHTS: SAM2]" in stdout


def test_legend_names_the_random_models():
    from clipsam.engine import render
    from clipsam.engine.types import SegmentationResult

    def models(clip: bool, sam: bool) -> dict:
        return {
            "clip": {"name": "c", "weights": "w", "random_weights": clip},
            "sam2": {"random_weights": sam},
        }

    assert render.random_weights_label(models(False, True)) == "SAM2 random weights - not a real prediction"
    assert render.random_weights_label(models(True, False)) == "CLIP random weights - not a real prediction"
    assert render.random_weights_label(models(True, True)).startswith("CLIP + SAM2 random weights")
    assert render.random_weights_label({"backend": "torch"}) == render.RANDOM_WEIGHTS_LABEL
    image = np.full((60, 300, 3), 128, np.uint8)

    def legend(clip: bool, sam: bool) -> np.ndarray:
        result = SegmentationResult(60, 300, ("a",), (), random_weights=clip or sam, models=models(clip, sam))
        return render.overlay(image, result)

    assert not np.array_equal(legend(False, True), legend(True, False))  # the legend text differs
    assert not np.array_equal(legend(False, True), legend(False, False))


def test_manifest_of_a_partial_folder_must_list_its_models_graphs(sclip_only, tmp_path):
    from clipsam.engine.manifest import ArtifactError, read_manifest, write_manifest

    data = json.loads((sclip_only / "manifest.json").read_text())
    for path in sclip_only.iterdir():
        if path.is_file() and path.name != "manifest.json":
            (tmp_path / path.name).symlink_to(path)
    broken = {k: v for k, v in data.items() if k not in ("format", "format_version")}
    sam2 = {
        "name": SAM,
        "weights_id": "x",
        "weights": "random-init, seed 0",
        "seed": 0,
        "random_weights": True,
    }
    broken["models"] = {**data["models"], "sam2": sam2}
    write_manifest(tmp_path, broken)
    with pytest.raises(ArtifactError, match="lists no sam2_encoder, sam2_decoder graph"):
        read_manifest(tmp_path)
    write_manifest(tmp_path, {**broken, "models": {}})
    with pytest.raises(ClipsamError, match="lists no model"):
        read_manifest(tmp_path)
