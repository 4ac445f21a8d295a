"""A user who brings only a SAM2 checkpoint: `clipsam export` of SAM2 alone, its provenance, and
`clipsam segment --points / --boxes` on that folder against sam2's own image predictor."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as coco_mask

from clipsam.cli.app import main
from clipsam.engine.errors import ClipsamError
from tests.cli_helpers import assert_one_line_error, run_cli

SAM = "sam2.1-hiera-tiny"
SAM2_GRAPHS = {"sam2_encoder", "sam2_decoder", "sam2_decoder_image", "sam2_fast_decoder"}
POINTS = [(30.0, 40.0), (100.0, 80.0), (150.5, 12.25)]
BOXES = [(10.0, 10.0, 60.0, 50.0), (70.0, 20.0, 155.0, 110.0)]
IMAGE_HW = (120, 160)


@pytest.fixture(scope="module")
def user_checkpoint(tmp_path_factory: pytest.TempPathFactory, sam2_tiny) -> Path:
    """A SAM2.1-tiny checkpoint in the official layout ({"model": state_dict}): the session's seeded random
    model with its mask decoder perturbed, so the file's weights are no seed's random init."""
    generator = torch.Generator().manual_seed(5)
    state = {key: value.clone() for key, value in sam2_tiny.module.state_dict().items()}
    for key, value in state.items():
        if key.startswith("sam_mask_decoder.") and value.is_floating_point():
            value += 0.02 * torch.randn(value.shape, generator=generator)
    path = tmp_path_factory.mktemp("user-checkpoint") / "sam2.1_hiera_tiny.pt"
    torch.save({"model": state}, path)
    return path


@pytest.fixture(scope="module")
def sam2_only(tmp_path_factory: pytest.TempPathFactory, user_checkpoint: Path) -> tuple[Path, str]:
    """`clipsam export --checkpoint FILE --model sam2.1-hiera-tiny --out A`, once: (A, its stdout). No CLIP
    checkpoint exists anywhere (the session's checkpoint folder is empty)."""
    out = tmp_path_factory.mktemp("sam2-only")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), pytest.raises(SystemExit) as info:
        main(["export", "--checkpoint", str(user_checkpoint), "--model", SAM, "--out", str(out)])
    assert info.value.code == 0, printed.getvalue()
    return out, printed.getvalue()


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, Path]:
    from clipsam.engine.bench.demo_scene import demo_scene

    image = demo_scene(*IMAGE_HW)
    path = tmp_path_factory.mktemp("scene") / "scene.png"
    Image.fromarray(image).save(path)
    return image, path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_export_of_one_sam2_checkpoint_records_only_it(sam2_only, user_checkpoint):
    from clipsam.engine.manifest import read_manifest

    folder, printed = sam2_only
    data = json.loads((folder / "manifest.json").read_text())
    digest = _sha256(user_checkpoint)
    assert list(data["models"]) == ["sam2"]
    entry = data["models"]["sam2"]
    assert entry["random_weights"] is False and entry["seed"] is None
    assert entry["weights_id"] == digest and entry["weights"] == f"sha256:{digest}" and entry["name"] == SAM
    assert data["random_weights"] is False
    assert set(data["graphs"]) == SAM2_GRAPHS and "text_features" not in data
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [*(f"{g}.onnx" for g in SAM2_GRAPHS), "manifest.json"]
    )
    manifest = read_manifest(folder)  # a partial folder passes the runtime's checks
    assert manifest.models == ("sam2",) and manifest.random_weights is False
    assert f"SAM2 {SAM}: sha256:{digest}" in printed and "random" not in printed.lower()


def _torch_reference_masks(checkpoint: Path, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """sam2's SAM2ImagePredictor on the checkpoint, one call per prompt (POINTS then BOXES), multimask, best
    by predicted IoU: masks bool [B, H, W], predicted IoU [B]."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    from clipsam.export.sam2_model import build_sam2_model

    predictor = SAM2ImagePredictor(build_sam2_model(SAM, checkpoint).module)
    calls = [{"point_coords": np.array([p], np.float32), "point_labels": np.array([1])} for p in POINTS]
    calls += [{"box": np.array(b, np.float32)} for b in BOXES]
    masks, ious = [], []
    with torch.inference_mode():
        predictor.set_image(image)
        for call in calls:
            candidates, iou, _ = predictor.predict(**call, multimask_output=True)
            best = int(np.argmax(iou))
            masks.append(candidates[best] > 0.5)
            ious.append(float(iou[best]))
    return np.stack(masks), np.array(ious)


def test_points_and_boxes_match_sam2_predictor(sam2_only, user_checkpoint, scene, tmp_path, capsys):
    image, image_path = scene
    folder, _ = sam2_only
    prompts = [a for p in POINTS for a in ("--points", f"{p[0]:g},{p[1]:g}")]
    prompts += [a for b in BOXES for a in ("--boxes", ",".join(f"{v:g}" for v in b))]
    out, record_path = tmp_path / "o.png", tmp_path / "o.json"
    args = ["segment", "--image", image_path, "--artifacts", folder, "--backend", "onnxruntime", *prompts]
    code, stdout, err = run_cli([*args, "--output", out, "--json", record_path], capsys)
    assert code == 0, err
    record = json.loads(record_path.read_text())
    count = len(POINTS) + len(BOXES)
    assert record["class_names"] == [f"prompt {i}" for i in range(count)]
    assert [s["class_id"] for s in record["segments"]] == list(range(count))
    assert record["models"]["sam2"]["random_weights"] is False and "clip" not in record["models"]
    assert record["random_weights"] is False and "RANDOM" not in stdout
    assert record["models"]["sam2"]["weights"] == _sha256(user_checkpoint)
    rles = [dict(s["segmentation"], counts=s["segmentation"]["counts"].encode()) for s in record["segments"]]
    got = np.moveaxis(coco_mask.decode(rles), 2, 0).astype(bool)
    expected, expected_iou = _torch_reference_masks(user_checkpoint, image)
    areas = expected.reshape(count, -1).sum(axis=1)
    assert ((areas > 0) & (areas < image.shape[0] * image.shape[1])).all(), areas  # not a vacuous check
    intersection = (got & expected).reshape(count, -1).sum(axis=1)
    union = (got | expected).reshape(count, -1).sum(axis=1)
    assert (intersection / union >= 0.999).all(), intersection / union
    np.testing.assert_allclose([s["score"] for s in record["segments"]], expected_iou, atol=1e-3)
    assert np.asarray(Image.open(out)).shape == image.shape


def test_python_api_on_sam2_only_folder(sam2_only, scene):
    from clipsam.engine.factory import load_pipeline
    from clipsam.engine.pipeline import vocabulary_from_words

    image, _ = scene
    pipeline = load_pipeline(sam2_only[0])
    result = pipeline.segment_with_prompts(image, boxes_xyxy=np.array(BOXES[:1]))
    assert [s.class_name for s in result.segments] == ["prompt 0"] and result.segments[0].area > 0
    assert result.random_weights is False and set(result.models) & {"clip", "sam2"} == {"sam2"}
    with pytest.raises(ClipsamError, match="no SCLIP graph"):
        pipeline.segment(image, vocabulary_from_words(["sky", "road"]))


def test_one_line_errors_of_prompt_runs(sam2_only, scene, tmp_path, capsys):
    folder, _ = sam2_only
    _, image_path = scene
    out = tmp_path / "o.png"
    base = [
        "segment",
        "--image",
        image_path,
        "--output",
        out,
        "--backend",
        "onnxruntime",
        "--artifacts",
        folder,
    ]
    cases = [
        (["--vocabulary", "sky"], "no SCLIP graph"),
        (["--points", "10,10", "--vocabulary", "sky"], "--vocabulary does not apply"),
        (["--points", "10,10", "--prompt", "sky"], "--prompt does not apply"),
        (["--points", "10"], "is not x,y"),
        (["--points", "10,nan"], "is not x,y"),
        (["--points", "161,10"], "outside the 160x120 image"),
        (["--boxes", "50,10,20,40"], "inverted"),
        (["--boxes", "0,0,20,121"], "outside the 160x120 image"),
    ]
    for extra, fragment in cases:
        code, _, err = run_cli([*base, *extra], capsys)
        assert_one_line_error(code, err, fragment)
    no_artifacts = ["segment", "--image", image_path, "--output", out, "--points", "10,10"]
    code, _, err = run_cli(no_artifacts, capsys)
    assert_one_line_error(code, err, "no SAM2 checkpoint at")  # the engine cache's, and none here
    code, _, err = run_cli(["export-text", folder, "--vocabulary", "cat"], capsys)
    assert_one_line_error(code, err, "holds no SCLIP model")
    assert not out.exists()
