"""End to end through the CLI with random weights of the real architectures (SCLIP ViT-B/16, SAM2.1 tiny)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from tests.cli_helpers import run_cli

VOCAB = ["--vocabulary", "sky", "--vocabulary", "car", "--vocabulary", "road"]
LOW_THRESHOLDS = ["--min-confidence", "0", "--min-region-size", "20", "--max-prompts", "6"]


@pytest.fixture(scope="module")
def segment_run(tmp_path_factory):
    """One `clipsam segment` run shared by the checks below."""
    from clipsam.engine.bench.demo_scene import demo_scene

    folder = tmp_path_factory.mktemp("segment")
    image = folder / "street.png"
    Image.fromarray(demo_scene(96, 128)).save(image)
    args = ["segment", "--image", image, *VOCAB, *LOW_THRESHOLDS, "--random-weights", "--seed", "3"]
    args += ["--output", folder / "overlay.png", "--json", folder / "result.json", "-v"]
    return folder, args


def test_segment_writes_overlay_and_coco_json(segment_run, capsys):
    folder, args = segment_run
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    assert "RANDOM WEIGHTS" in out and "sam2_decoder" in out
    overlay = np.asarray(Image.open(folder / "overlay.png"))
    assert overlay.shape == (96, 128, 3) and overlay.dtype == np.uint8
    record = json.loads((folder / "result.json").read_text())
    assert record["image"] == {"file": str(folder / "street.png"), "height": 96, "width": 128}
    assert record["random_weights"] is True
    assert record["models"]["sam2"]["name"] == "sam2.1-hiera-tiny"
    assert record["models"]["clip"]["weights"].startswith("random-init")
    assert record["class_names"] == ["sky", "car", "road"]
    assert len(record["segments"]) >= 1
    for segment in record["segments"]:
        assert set(segment) == {"class_id", "class_name", "score", "bbox", "area", "segmentation"}
        assert record["class_names"][segment["class_id"]] == segment["class_name"]
        rle = {"size": segment["segmentation"]["size"], "counts": segment["segmentation"]["counts"].encode()}
        decoded = coco_mask.decode(rle)
        assert decoded.shape == (96, 128)
        assert int(decoded.sum()) == segment["area"] >= 20
        np.testing.assert_allclose(coco_mask.toBbox(rle), segment["bbox"])
    classes_per_pixel = np.zeros((96, 128, len(record["class_names"])), bool)
    for segment in record["segments"]:
        rle = {**segment["segmentation"], "counts": segment["segmentation"]["counts"].encode()}
        classes_per_pixel[:, :, segment["class_id"]] |= coco_mask.decode(rle) > 0
    assert (classes_per_pixel.sum(axis=2) <= 1).all(), "cross-class overlaps must be resolved by the merge"
    # The overlay differs from the input where a segment is.
    original = np.asarray(Image.open(folder / "street.png"))
    assert (overlay != original).any(axis=2).sum() > 0


def test_remove_blackens_only_the_target_class(segment_run, capsys):
    folder, args = segment_run
    code, _, err = run_cli(args, capsys)  # produces result.json to know the segments
    assert code == 0, err
    record = json.loads((folder / "result.json").read_text())
    target = record["segments"][0]["class_name"]
    edit_args = [a for a in args if a not in ("-v",)]
    edit_args[edit_args.index("--output") + 1] = folder / "removed.png"
    json_at = edit_args.index("--json")
    del edit_args[json_at : json_at + 2]
    code, _, err = run_cli([*edit_args, "--edit", "remove", "--prompt", target], capsys)
    assert code == 0, err
    removed = np.asarray(Image.open(folder / "removed.png"))
    original = np.asarray(Image.open(folder / "street.png"))
    union = np.zeros((96, 128), bool)
    for s in record["segments"]:
        if s["class_name"] == target:
            union |= (
                coco_mask.decode({**s["segmentation"], "counts": s["segmentation"]["counts"].encode()}) > 0
            )
    assert (removed[union] == 0).all()
    np.testing.assert_array_equal(removed[~union], original[~union])


def test_demo_runs_on_random_weights(tmp_path, capsys):
    code, out, err = run_cli(
        ["demo", "--output", tmp_path / "demo.png", "--json", tmp_path / "demo.json"], capsys
    )
    assert code == 0, err
    assert "random weights" in err and "RANDOM WEIGHTS" in out
    for stage in ("sclip", "sam2_encoder", "sam2_decoder", "merge"):
        assert stage in out
    assert np.asarray(Image.open(tmp_path / "demo.png")).shape == (480, 640, 3)
    assert json.loads((tmp_path / "demo.json").read_text())["random_weights"] is True
