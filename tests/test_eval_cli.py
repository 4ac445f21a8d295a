"""`clipsam eval` and `clipsam convert-coco-object` through the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clipsam.cli import commands_eval
from clipsam.cli.app import app
from clipsam.engine.eval.coco_object import panoptic_to_object, stuff_to_object
from tests.cli_helpers import assert_one_line_error, linked_copy, run_cli
from tests.test_eval_fixtures import make_benchmark

if not any(c.name == "eval" for c in app.registered_commands):  # until app.py calls register itself
    commands_eval.register(app)


def test_missing_dataset_is_one_line_with_the_layout(tmp_path: Path, capsys):
    code, _, err = run_cli(
        ["eval", "--dataset", "ade20k", "--data-dir", tmp_path, "--random-weights"], capsys
    )
    assert_one_line_error(code, err, f"expected {tmp_path}/ade/ADEChallengeData2016/{{images/validation/")
    assert "ADEChallengeData2016.zip" in err


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--dataset", "voc"], "unknown dataset 'voc'"),
        (["--dataset", "voc21", "--backend", "torch", "--artifacts", "exported"], "drop it"),
        (["--dataset", "voc21", "--device", "tpu"], "unknown --device"),
        (["--dataset", "voc21", "--mode", "vote"], "vote"),
        (["--dataset", "voc21", "--artifacts", "exported"], "exported"),
        (["--dataset", "voc21", "--backend", "tflite"], "tflite"),
    ],
)
def test_cli_errors_are_one_line(args, fragment, tmp_path: Path, capsys):
    make_benchmark("voc21", tmp_path / "data")
    code, _, err = run_cli(
        ["eval", *args, "--data-dir", tmp_path / "data", "--output-dir", tmp_path / "out"], capsys
    )
    assert_one_line_error(code, err, fragment)


def test_backend_choices_are_the_registry():
    from clipsam.cli.eval_options import EvalBackend
    from clipsam.engine.factory import backend_names

    assert [backend.value for backend in EvalBackend] == list(backend_names())


def test_missing_checkpoint_is_one_line(tmp_path: Path, capsys):
    make_benchmark("voc20", tmp_path / "data")
    code, _, err = run_cli(["eval", "--dataset", "voc20", "--data-dir", tmp_path / "data"], capsys)
    assert_one_line_error(code, err, "no CLIP checkpoint")


def test_eval_dense_end_to_end_with_the_tiny_clip(tmp_path: Path, capsys, tiny_clip_checkpoint: Path):
    make_benchmark("voc20", tmp_path / "data")
    out = tmp_path / "out"
    args = [
        "eval", "--dataset", "voc20", "--data-dir", tmp_path / "data",
        "--clip-checkpoint", tiny_clip_checkpoint, "--output-dir", out, "--save-vis",
        "--num-samples", "1", "--device", "cpu",
    ]  # fmt: skip
    code, stdout, err = run_cli(args, capsys)
    assert code == 0, err
    assert "voc20 dense: mIoU" in stdout
    record = json.loads((out / "results.json").read_text())
    assert record["num_images"] == 1 and record["config"]["dense_config"]["logit_scale"] == 40.0
    assert len(record["per_class"]) == 20 and record["per_class"][0]["class"] == "aeroplane"
    assert set(record["timings_ms_per_image"]) >= {"sclip", "postprocess", "total"}
    assert (out / "visualizations" / "2007_000033.png").is_file()


def test_eval_on_exported_artifacts(tmp_path: Path, capsys, tiny_artifacts: Path, tiny_clip_checkpoint: Path):
    """--backend onnxruntime: the factory's pipeline on the session's export (its text folder copied and
    given the voc20 words, so the session's artifacts stay as they are), in dense, sam-vote and regions
    mode."""
    art = voc20_artifacts(tiny_artifacts, tmp_path / "art", tiny_clip_checkpoint, capsys)
    make_benchmark("voc20", tmp_path / "data")
    for mode, sam_stages in (
        ("dense", set()),
        ("sam-vote", {"prompts", "sam2_encoder", "sam2_decoder", "vote"}),
        ("regions", {"sam2_encoder", "regions_decode", "regions_vote"}),
    ):
        out = tmp_path / mode
        args = [
            "eval", "--dataset", "voc20", "--data-dir", tmp_path / "data", "--backend", "onnxruntime",
            "--artifacts", art, "--output-dir", out, "--num-samples", "1", "--mode", mode,
            "--vote-points", "2",
        ]  # fmt: skip
        code, stdout, err = run_cli(args, capsys)
        assert code == 0, err
        assert f"voc20 {mode}: mIoU" in stdout
        record = json.loads((out / "results.json").read_text())
        assert record["config"]["models"]["backend"] == "onnxruntime" and record["random_weights"]
        assert set(record["timings_ms_per_image"]) == {"sclip", "postprocess", "total"} | sam_stages
        assert set(record["setup_ms"]) == {"text"}


def test_coco_object_conversion_rules():
    train_ids = np.array([[0, 79, 80], [170, 255, 5]], np.uint8)
    np.testing.assert_array_equal(stuff_to_object(train_ids), [[1, 80, 0], [0, 255, 6]])
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[0, 0] = (1, 0, 0)  # segment 1: a thing (category 90 → rank 80)
    rgb[0, 1] = (0, 1, 0)  # segment 256: stuff
    segments = [{"id": 1, "category_id": 90}, {"id": 256, "category_id": 200}]
    out = panoptic_to_object(rgb, segments, {90: 80})
    np.testing.assert_array_equal(out, [[80, 0, 255], [255, 255, 255]])


def test_convert_coco_object_command_feeds_the_reader(tmp_path: Path, capsys):
    root = make_benchmark("coco-stuff164k", tmp_path)
    for label in (root / "annotations/val2017").glob("*_instanceTrainIds.png"):
        label.unlink()
    code, stdout, err = run_cli(["convert-coco-object", root], capsys)
    assert code == 0, err
    assert "wrote 3 COCO-Object label files" in stdout
    from clipsam.engine.eval.datasets import open_dataset

    dataset = open_dataset("coco-object", tmp_path)
    np.testing.assert_array_equal(
        dataset.load_label(dataset.samples[0]), [[1, 0, 0, 0], [1, 255, 0, 0], [80, 80, 0, 0]]
    )


def test_convert_without_sources_is_one_line(tmp_path: Path, capsys):
    code, _, err = run_cli(["convert-coco-object", tmp_path], capsys)
    assert_one_line_error(code, err, "no COCO-Stuff164k train-id labels")


def voc20_artifacts(tiny_artifacts: Path, art: Path, tiny_clip_checkpoint: Path, capsys) -> Path:
    """A copy of the session's export (graphs linked, manifest and text folder copied) whose text features
    also hold the VOC-20 words; the session's artifacts stay as they are."""
    from clipsam.engine.eval.datasets import benchmark_vocabulary

    linked_copy(tiny_artifacts, art)
    words = list(benchmark_vocabulary("voc20").queries)
    code, _, err = run_cli(
        ["export-text", art, "-V", *words, "--clip-checkpoint", tiny_clip_checkpoint], capsys
    )
    assert code == 0, err
    return art
