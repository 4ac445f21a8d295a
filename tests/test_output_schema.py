"""`clipsam segment --json` output against docs/segment-output.schema.json: real runs (the torch reference
with the golden tiny CLIP, the onnxruntime runtime on exported artifacts, SAM2 alone on given points), and
the schema's own strictness (it must reject what the format does not allow)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest

from clipsam.engine.backends import backend_names
from clipsam.engine.precision import FAST_MECHANISMS
from tests.cli_helpers import run_cli

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "docs" / "segment-output.schema.json"
VOCAB = ["--vocabulary", "sky", "--vocabulary", "car", "--vocabulary", "road"]
LOW_THRESHOLDS = ["--min-confidence", "0", "--min-region-size", "20", "--max-prompts", "4"]
SEGMENT_STAGES = {"text", "sclip", "prompts", "sam2_encoder", "sam2_decoder", "merge", "total"}


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _segment_json(args: list, tmp_path: Path, capsys, street_image: Path) -> dict:
    out = tmp_path / "result.json"
    base = ["segment", "--image", street_image, "--output", tmp_path / "overlay.png", "--json", out]
    code, _, err = run_cli([*base, *args], capsys)
    assert code == 0, err
    return json.loads(out.read_text())


def _assert_valid(validator: jsonschema.Draft202012Validator, record: dict) -> None:
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(record)]
    assert not errors, errors


@pytest.fixture(scope="module")
def torch_record(tmp_path_factory, tiny_clip_checkpoint: Path) -> dict:
    """One torch-reference run (golden tiny CLIP file, SAM2.1 tiny random), shared by the checks below."""
    from PIL import Image

    from clipsam.cli.app import main
    from clipsam.engine.bench.demo_scene import demo_scene

    folder = tmp_path_factory.mktemp("schema-torch")
    image, out = folder / "street.png", folder / "result.json"
    Image.fromarray(demo_scene(96, 128)).save(image)
    args = ["segment", "--image", image, *VOCAB, *LOW_THRESHOLDS, "--backend", "torch"]
    args += ["--clip-checkpoint", tiny_clip_checkpoint, "--random-weights"]
    args += ["--output", folder / "overlay.png", "--json", out]
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    assert info.value.code in (0, None)
    return json.loads(out.read_text())


def test_torch_reference_output_matches_the_schema(validator, torch_record):
    _assert_valid(validator, torch_record)
    assert torch_record["models"]["backend"] == "torch"
    assert set(torch_record["timings_ms"]) == SEGMENT_STAGES
    assert torch_record["counts"]["segments"] == len(torch_record["segments"]) > 0
    assert 0 < torch_record["counts"]["prompts"] <= 4


def test_onnxruntime_artifacts_output_matches_the_schema(
    validator, artifacts, street_image, tmp_path, capsys
):
    args = [*VOCAB, *LOW_THRESHOLDS, "--backend", "onnxruntime", "--artifacts", artifacts]
    record = _segment_json(args, tmp_path, capsys, street_image)
    _assert_valid(validator, record)
    assert record["models"]["backend"] == "onnxruntime" and record["models"]["providers"]
    assert set(record["timings_ms"]) == SEGMENT_STAGES
    assert record["counts"]["segments"] == len(record["segments"])


def test_given_points_output_matches_the_schema(validator, artifacts, street_image, tmp_path, capsys):
    args = ["--artifacts", artifacts, "--points", "30,40", "--points", "100,20"]
    record = _segment_json(args, tmp_path, capsys, street_image)
    _assert_valid(validator, record)
    assert record["counts"] == {"prompts": 2, "segments": 2}
    assert record["class_names"] == ["prompt 0", "prompt 1"]


def test_schema_names_every_backend_and_fast_mechanism(validator):
    models = validator.schema["properties"]["models"]["properties"]
    assert sorted(models["backend"]["enum"]) == sorted(backend_names())
    assert tuple(models["fast_mechanism"]["enum"]) == ("fp32", *FAST_MECHANISMS)


@pytest.mark.parametrize(
    "mutation",
    [
        lambda r: r["timings_ms"].update(num_prompts=4.0),  # counts do not belong in timings
        lambda r: r["counts"].pop("segments"),
        lambda r: r.update(extra=1),
        lambda r: r["models"]["sam2"].update(seed=0),
        lambda r: r["models"].update(backend="tflite"),
        lambda r: r["models"].pop("clip") and r["models"].pop("sam2"),
        lambda r: r["segments"][0].update(bbox=[0, 0, 1]),
        lambda r: r["segments"][0]["segmentation"].update(counts=b"abc"),
        lambda r: r["segments"][0].update(area=-1),
        lambda r: r.update(random_weights="yes"),
        lambda r: r["image"].pop("file"),
    ],
)
def test_schema_rejects_what_the_format_does_not_allow(validator, torch_record, mutation):
    broken = copy.deepcopy(torch_record)
    mutation(broken)
    assert not validator.is_valid(broken)
