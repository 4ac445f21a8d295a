"""Issue 26's accuracy mode end to end: the Pipeline's stages (embed → regions → features with regions → dense
map → vote → prompts → decode → merge), `segment --regions` / `dense --regions` on the exported artifacts and
on the torch reference, the JSON's record, the errors."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from clipsam.engine.dense_clip import DenseConfig
from clipsam.engine.pipeline import Pipeline, SegmentOptions, vocabulary_from_words
from clipsam.engine.regions import RegionOptions, patch_regions
from clipsam.engine.types import ImageEmbedding, MaskCandidates, RleCandidates
from clipsam.kernels import rle as rle_codec
from tests.cli_helpers import assert_one_line_error, run_cli
from tests.reference import regions_reference as ref

SCHEMA = Path(__file__).resolve().parents[1] / "docs" / "segment-output.schema.json"
VOCAB = ["--vocabulary", "sky", "--vocabulary", "car", "--vocabulary", "road"]
LOW = ["--min-confidence", "0", "--min-region-size", "20", "--max-prompts", "4"]
# A random SAM2 predicts low IoUs: a threshold of 0 keeps its masks, so regions exist and change the result.
REGIONS = ["--regions", "--region-points", "4", "--region-iou", "0"]
OPTIONS = RegionOptions(points_per_side=4, min_iou=0.0, min_region_size=20)


class QuadrantMasks:
    """A fake SAM2 mask stage with distinct masks (a random SAM2's masks are near duplicates): each point's
    mask is its image quadrant, predicted IoU 0.9; the first prompt's is the top half, IoU 0.8."""

    model_id = "quadrants"

    def embed(self, image):
        return ImageEmbedding(arrays={}, image_hw=image.shape[:2], model=self.model_id)

    def decode_masks(self, embedding, prompts, use_boxes=False):
        height, width = embedding.image_hw
        masks = np.zeros((len(prompts), height, width), bool)
        for b, (x, y) in enumerate(prompts.coords[:, 0]):
            rows = slice(0, height // 2) if y < height // 2 else slice(height // 2, height)
            cols = slice(0, width // 2) if x < width // 2 else slice(width // 2, width)
            masks[b, rows, cols] = True
        masks[0, : height // 2] = True
        iou = np.full(len(prompts), 0.9, np.float32)
        iou[0] = 0.8
        return MaskCandidates(masks, iou, prompts.class_ids.astype(np.int32), prompts.scores * iou)

    def decode(self, embedding, prompts, use_boxes=False):
        dense = self.decode_masks(embedding, prompts, use_boxes)
        return RleCandidates(
            rle_codec.encode_batch(dense.masks.view(np.uint8)), dense.iou, dense.class_ids, dense.scores
        )


@pytest.fixture(scope="module")
def pipeline(tiny_artifacts: Path) -> Pipeline:
    """The exported tiny CLIP towers with the fake quadrant masks."""
    from clipsam.engine.factory import load_pipeline

    loaded = load_pipeline(tiny_artifacts, "onnxruntime")
    return Pipeline(loaded.dense_stage, QuadrantMasks(), models=loaded.models, random_weights=True)


@pytest.fixture(scope="module")
def scene() -> np.ndarray:
    from clipsam.engine.bench.demo_scene import demo_scene

    return demo_scene(96, 128)


def test_stages_compose_and_the_features_follow_the_definition(pipeline, scene, tiny_clip_checkpoint):
    from clipsam.export.clip_model import load_sclip

    regions = pipeline.regions(pipeline.embed(scene), OPTIONS)
    assert regions.count == 5  # four quadrants, then the top half (larger) painted over the top two
    np.testing.assert_array_equal(np.unique(regions.labels[:48]), [5])
    bottom = {int(v) for v in np.unique(regions.labels[48:, :64])} | {
        int(v) for v in np.unique(regions.labels[48:, 64:])
    }
    assert len(bottom) == 2 and 0 not in bottom
    config = DenseConfig(short_side=224)
    features = pipeline.features(scene, config, regions)
    plain = pipeline.features(scene, config)
    assert features.regions == regions.key and plain.regions == ""
    assert not np.allclose(features.features, plain.features, atol=1e-4)
    ids = patch_regions(regions, features.windows, features.network_hw, features.patch_size)
    np.testing.assert_array_equal(
        ids, ref.patch_regions(regions.labels, features.network_hw, features.windows, features.patch_size)
    )
    # the graph's features = the reference's, on the windows the stage cut
    import torch

    from clipsam.engine.transforms import sclip_preprocess

    network = sclip_preprocess(scene, 224, 2048)
    crops = np.stack([network[:, y0:y1, x0:x1] for y0, y1, x0, x1 in features.windows])
    expected = ref.encode_with_regions(load_sclip(tiny_clip_checkpoint), torch.from_numpy(crops), ids).numpy()
    assert np.abs(features.features - expected).max() <= 1e-4


def test_dense_with_regions_is_the_vote_of_the_restricted_map(pipeline, scene):
    vocabulary = vocabulary_from_words(["sky", "car", "road"])
    voted = pipeline.dense(scene, vocabulary, regions=OPTIONS)
    regions = pipeline.regions(pipeline.embed(scene), OPTIONS)
    text = pipeline.text(vocabulary)
    config = DenseConfig(short_side=336, logit_scale=40.0)
    unvoted = pipeline.dense_map(pipeline.features(scene, config, regions), text, config)
    np.testing.assert_array_equal(voted.pred, ref.vote(unvoted.pred, regions.labels))
    np.testing.assert_array_equal(voted.probs, unvoted.probs)


def test_segment_with_regions_records_the_mode(pipeline, scene):
    vocabulary = vocabulary_from_words(["sky", "car", "road"])
    options = SegmentOptions(min_confidence=0.0, min_region_size=20, max_prompts=4, regions=OPTIONS)
    result = pipeline.segment(scene, vocabulary, options)
    assert result.models["regions"] == OPTIONS.record() and "regions" not in pipeline.models
    assert list(result.timings_ms) == [
        "text", "sam2_encoder", "regions_decode", "sclip", "regions_vote", "prompts", "sam2_decoder", "merge",
        "total",
    ]  # fmt: skip
    assert result.counts["regions"] == 5
    plain = pipeline.segment(scene, vocabulary, SegmentOptions(min_confidence=0.0, min_region_size=20))
    assert "regions" not in plain.models and "regions_decode" not in plain.timings_ms  # off by default


def test_segment_cli_with_regions_matches_the_schema(tiny_artifacts, street_image, tmp_path, capsys):
    out = tmp_path / "r.json"
    args = ["segment", "--image", street_image, "--output", tmp_path / "o.png", "--json", out, *VOCAB, *LOW]
    args += ["--backend", "onnxruntime", "--artifacts", tiny_artifacts, *REGIONS]
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    record = json.loads(out.read_text())
    jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text())).validate(record)
    assert (
        record["models"]["regions"]["points_per_side"] == 4 and record["models"]["regions"]["region_iou"] == 0
    )
    assert {"regions_decode", "regions_vote"} <= set(record["timings_ms"])


def test_dense_cli_with_regions(tiny_artifacts, street_image, tmp_path, capsys):
    plain_out, region_out = tmp_path / "plain.npz", tmp_path / "regions.npz"
    base = [
        "dense",
        "--image",
        street_image,
        *VOCAB,
        "--backend",
        "onnxruntime",
        "--artifacts",
        tiny_artifacts,
    ]
    assert run_cli([*base, "--out", plain_out], capsys)[0] == 0
    code, _, err = run_cli([*base, "--out", region_out, *REGIONS], capsys)
    assert code == 0, err
    with np.load(plain_out) as plain, np.load(region_out) as voted:  # a random SAM2: few, large regions
        assert voted["pred"].shape == plain["pred"].shape and np.isfinite(voted["probs"]).all()


def test_segment_cli_with_regions_on_the_torch_reference(
    tiny_clip_checkpoint, street_image, tmp_path, capsys
):
    out = tmp_path / "t.json"
    args = ["segment", "--image", street_image, "--output", tmp_path / "o.png", "--json", out, *VOCAB, *LOW]
    args += ["--backend", "torch", "--clip-checkpoint", tiny_clip_checkpoint, "--random-weights", *REGIONS]
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    assert json.loads(out.read_text())["models"]["regions"]["mode"] == "regions"


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--region-points", "4"], "add --regions"),
        (["--region-iou", "0.5"], "add --regions"),
        (["--regions", "--region-points", "0"], "--region-points must be in 1..64"),
        (["--regions", "--region-iou", "2"], "--region-iou must be in [0, 1]"),
    ],
)
def test_region_option_errors(tiny_artifacts, street_image, tmp_path, capsys, extra, fragment):
    args = ["segment", "--image", street_image, "--output", tmp_path / "o.png", *VOCAB]
    code, _, err = run_cli([*args, "--backend", "onnxruntime", "--artifacts", tiny_artifacts, *extra], capsys)
    assert code == 2
    assert_one_line_error(code, err, fragment)


def test_artifacts_without_the_region_tower_say_so(tiny_artifacts, street_image, tmp_path, capsys):
    from clipsam.engine.manifest import MANIFEST_NAME, REGIONS_GRAPH

    folder = tmp_path / "old"
    folder.mkdir()
    for path in tiny_artifacts.iterdir():
        if path.name != MANIFEST_NAME and not path.name.startswith(REGIONS_GRAPH):
            (folder / path.name).symlink_to(path)
    data = json.loads((tiny_artifacts / MANIFEST_NAME).read_text())
    del data["graphs"][REGIONS_GRAPH]
    (folder / MANIFEST_NAME).write_text(json.dumps(data))
    args = ["segment", "--image", street_image, "--output", tmp_path / "o.png", *VOCAB, *REGIONS]
    code, _, err = run_cli([*args, "--backend", "onnxruntime", "--artifacts", folder], capsys)
    assert code == 2
    assert_one_line_error(code, err, "re-export")


def test_eval_regions_mode_is_the_vote_of_the_restricted_map(pipeline, scene):
    from clipsam.engine.eval.modes import ModePredictor

    vocabulary = vocabulary_from_words(["sky", "car", "road"])
    config = DenseConfig(short_side=224)
    options = RegionOptions(points_per_side=4)
    predictor = ModePredictor(pipeline, vocabulary, config, mode="regions", region_options=options)
    pred, timings = predictor(scene)
    regions = pipeline.regions(pipeline.embed(scene), options)
    dense = pipeline.dense_map(pipeline.features(scene, config, regions), pipeline.text(vocabulary), config)
    np.testing.assert_array_equal(pred, ref.vote(dense.pred, regions.labels))
    assert set(timings) == {"sam2_encoder", "regions_decode", "sclip", "postprocess", "regions_vote"}
