"""`--mode` plumbing: dense / prompted-sam / sam-vote with the tiny golden CLIP and a random SAM2.1 tiny."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from clipsam.engine.dense_clip import PRESETS, DenseConfig
from clipsam.engine.errors import ClipsamError
from clipsam.engine.eval.modes import ModePredictor, claim_regions, majority_vote
from clipsam.engine.pipeline import Pipeline, SegmentOptions, StageTimer
from clipsam.engine.prompts import grid_prompts
from clipsam.engine.types import ImageEmbedding, MaskCandidates, RleCandidates
from clipsam.engine.vocabulary import Vocabulary
from clipsam.kernels import rle as rle_codec
from tests.conftest import rng_image


@pytest.fixture(scope="module")
def tiny_dense(golden_dir: Path) -> Pipeline:
    """The torch reference with the golden tiny CLIP, SCLIP only (as `eval` loads it in dense mode)."""
    from clipsam.engine.factory import load_reference_pipeline
    from clipsam.engine.models.choice import ModelChoice

    choice = ModelChoice(clip_checkpoint=golden_dir / "sclip_tiny_openai_format.pt")
    return load_reference_pipeline(choice, stages=("dense",))


# Few queries and no upscaling keep the tiny CLIP's text and image passes short; the presets are covered by
# the CLI test.
SMALL = Vocabulary.from_lines(["background", "cat, kitten", "dog"])
SMALL_CONFIG = DenseConfig(short_side=0, logit_scale=65.0, prob_thd=0.1, area_thd=0.1)


class LeftHalfMasks:
    """A fake SAM2 mask stage: every prompt's mask is the image's left half, predicted IoU 0.9."""

    model_id = "left-half"

    def embed(self, image):
        return ImageEmbedding(arrays={}, image_hw=image.shape[:2], model=self.model_id)

    def decode_masks(self, embedding, prompts, use_boxes=False):
        height, width = embedding.image_hw
        masks = np.zeros((len(prompts), height, width), bool)
        masks[:, :, : width // 2] = True
        iou = np.full(len(prompts), 0.9, np.float32)
        return MaskCandidates(masks, iou, prompts.class_ids.astype(np.int32), prompts.scores * iou)

    def decode(self, embedding, prompts, use_boxes=False):
        dense = self.decode_masks(embedding, prompts, use_boxes)
        return RleCandidates(rle_codec.encode_batch(dense.masks), dense.iou, dense.class_ids, dense.scores)


def with_masks(dense: Pipeline, masks) -> Pipeline:
    return Pipeline(dense.dense_stage, masks, models=dense.models, random_weights=dense.random_weights)


def test_grid_prompts_cover_the_image():
    prompts = grid_prompts(30, 40, 2 * 2)  # sam-vote's grid: points_per_side² points
    np.testing.assert_array_equal(prompts.coords[:, 0], [[10, 7], [30, 7], [10, 22], [30, 22]])
    assert prompts.labels.tolist() == [[1]] * 4 and prompts.class_ids.tolist() == [0] * 4


def test_grid_prompts_floor_exact_centres():
    # 6 per side over 108 pixels: centres (i + 0.5)·18 = 9, 27, …, 99 are whole pixels and stay so (a float32
    # product 62.99… would floor one pixel short); row-major: x varies fastest.
    coords = grid_prompts(108, 108, 36).coords[:, 0]
    centres = [9, 27, 45, 63, 81, 99]
    np.testing.assert_array_equal(coords[:6], [[x, 9] for x in centres])
    np.testing.assert_array_equal(coords[::6, 1], centres)
    np.testing.assert_array_equal(grid_prompts(5, 7, 9).coords[:, 0, 0], [1, 3, 5] * 3)  # 7/6, 21/6, 35/6


def test_claim_regions_best_iou_first_and_threshold():
    masks = np.zeros((3, 2, 4), bool)
    masks[0, :, :3] = True
    masks[1, :, 1:] = True
    masks[2] = True
    regions = claim_regions(masks, np.array([0.6, 0.9, 0.2], np.float32), min_iou=0.5)
    np.testing.assert_array_equal(regions, [[0, 1, 1, 1], [0, 1, 1, 1]])


def test_majority_vote_inside_regions_only():
    regions = np.array([[0, 0, 0, -1], [1, 1, 1, -1]], np.int32)
    dense = np.array([[2, 2, 3, 5], [1, 4, 4, 6]], np.int32)
    np.testing.assert_array_equal(majority_vote(regions, dense, 7), [[2, 2, 2, 5], [4, 4, 4, 6]])


def test_prompted_sam_paints_masks_and_background(tiny_dense):
    options = SegmentOptions(min_confidence=0.0, min_region_size=1, max_prompts=3)
    predictor = ModePredictor(
        with_masks(tiny_dense, LeftHalfMasks()), SMALL, SMALL_CONFIG, mode="prompted-sam",
        has_background=True, options=options,
    )  # fmt: skip
    pred, timings = predictor(rng_image(24, 32, seed=3))
    assert pred.shape == (24, 32) and pred.dtype == np.int32
    assert (pred[:, 16:] == 0).all()  # nothing covers the right half: background
    assert len(np.unique(pred[:, :16])) == 1 and pred[0, 0] > 0  # one winning foreground mask
    assert {"sclip", "prompts", "sam2_encoder", "sam2_decoder", "merge"} <= set(timings)


def test_sam_vote_claims_with_the_grid(tiny_dense):
    image = rng_image(24, 32, seed=3)
    predictor = ModePredictor(
        with_masks(tiny_dense, LeftHalfMasks()), SMALL, SMALL_CONFIG, mode="sam-vote", vote_points_per_side=2
    )
    pred, timings = predictor(image)
    dense = predictor.dense_map(image, StageTimer())
    expected = dense.pred.copy()
    expected[:, :16] = np.bincount(dense.pred[:, :16].ravel(), minlength=3).argmax()  # the left half votes
    np.testing.assert_array_equal(pred, expected)
    assert {"sclip", "postprocess", "prompts", "sam2_encoder", "sam2_decoder", "vote"} <= set(timings)


def test_dense_mode_with_pamr_runs(tiny_dense):
    predictor = ModePredictor(tiny_dense, SMALL, PRESETS["voc20"], mode="dense", use_pamr=True)
    pred, timings = predictor(rng_image(20, 28, seed=1))
    assert pred.shape == (20, 28) and pred.max() < 3 and "pamr" in timings
    assert set(predictor.setup_ms) == {"text"}


def test_pamr_refines_inside_dense_map_and_is_timed_once(tiny_dense, monkeypatch):
    """PAMR runs inside Pipeline.dense_map; its time is "pamr" alone, not also in "postprocess"."""
    from clipsam.engine.eval import modes

    def slow_identity(guide, logits):
        assert guide.shape == (3, *logits.shape[1:])  # the guide is in the logits' (image) frame
        time.sleep(0.2)
        return logits

    monkeypatch.setattr(modes, "pamr", slow_identity)
    image = rng_image(20, 28, seed=1)
    plain, _ = ModePredictor(tiny_dense, SMALL, PRESETS["voc20"], mode="dense")(image)
    predictor = ModePredictor(tiny_dense, SMALL, PRESETS["voc20"], mode="dense", use_pamr=True)
    start = time.perf_counter()
    pred, timings = predictor(image)
    wall_ms = (time.perf_counter() - start) * 1000.0
    np.testing.assert_array_equal(pred, plain)  # an identity refinement changes nothing
    assert timings["pamr"] >= 200.0
    assert sum(timings.values()) <= wall_ms  # sequential stages: counted twice, PAMR would exceed the wall


def test_sam_modes_need_a_mask_stage(tiny_dense):
    with pytest.raises(ClipsamError, match="no SAM2"):
        ModePredictor(tiny_dense, SMALL, SMALL_CONFIG, mode="sam-vote")


def test_sam_modes_with_random_sam2_tiny(golden_dir: Path):
    from clipsam.engine.factory import load_reference_pipeline
    from clipsam.engine.models.choice import ModelChoice

    choice = ModelChoice(clip_checkpoint=golden_dir / "sclip_tiny_openai_format.pt", sam_random=True, seed=0)
    pipeline = load_reference_pipeline(choice)
    vocabulary = SMALL
    image = rng_image(30, 40, seed=2)
    options = SegmentOptions(min_confidence=0.0, min_region_size=1, max_prompts=2)
    prompted = ModePredictor(
        pipeline, vocabulary, SMALL_CONFIG, mode="prompted-sam", has_background=True, options=options
    )
    pred, timings = prompted(image)
    assert pred.shape == (30, 40) and 0 <= pred.min() and pred.max() < 3
    assert timings["sam2_decoder"] > 0
    vote = ModePredictor(pipeline, vocabulary, SMALL_CONFIG, mode="sam-vote", vote_points_per_side=2)
    pred, timings = vote(image)
    assert pred.shape == (30, 40) and pred.max() < 3 and "vote" in timings
