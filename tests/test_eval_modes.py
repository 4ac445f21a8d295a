"""`--mode` plumbing: dense / prompted-sam / sam-vote with the tiny golden CLIP and a random SAM2.1 tiny."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clipsam.engine.dense_clip import PRESETS, DenseConfig
from clipsam.engine.eval_modes import ModePredictor, claim_regions, grid_prompts, majority_vote
from clipsam.engine.pipeline import SegmentOptions
from clipsam.engine.types import MaskCandidates
from clipsam.engine.vocabulary import Vocabulary
from tests.conftest import rng_image


@pytest.fixture(scope="module")
def tiny_dense(golden_dir: Path):
    from clipsam.engine.backends.torch_reference import load_dense_backend
    from clipsam.engine.model_choice import ModelChoice

    return load_dense_backend(ModelChoice(clip_checkpoint=golden_dir / "sclip_tiny_openai_format.pt"))


# Few queries and no upscaling keep the tiny CLIP's text and image passes short; the presets are covered by
# the CLI test.
SMALL = Vocabulary.from_lines(["background", "cat, kitten", "dog"])
SMALL_CONFIG = DenseConfig(short_side=0, logit_scale=65.0, prob_thd=0.1, area_thd=0.1)


class LeftHalfMasks:
    """A fake SAM2: every prompt's mask is the image's left half, predicted IoU 0.9."""

    def set_image(self, image):
        self.hw = image.shape[:2]

    def predict(self, prompts, use_boxes=False):
        masks = np.zeros((len(prompts), *self.hw), bool)
        masks[:, :, : self.hw[1] // 2] = True
        iou = np.full(len(prompts), 0.9, np.float32)
        return MaskCandidates(masks, iou, prompts.class_ids.astype(np.int32), prompts.scores * iou)


def test_grid_prompts_cover_the_image():
    prompts = grid_prompts(30, 40, 2)
    np.testing.assert_array_equal(prompts.coords[:, 0], [[10, 7], [30, 7], [10, 22], [30, 22]])
    assert prompts.labels.tolist() == [[1]] * 4


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
        tiny_dense, LeftHalfMasks(), SMALL, SMALL_CONFIG, mode="prompted-sam", has_background=True,
        options=options,
    )  # fmt: skip
    pred, timings = predictor(rng_image(24, 32, seed=3))
    assert pred.shape == (24, 32) and pred.dtype == np.int32
    assert (pred[:, 16:] == 0).all()  # nothing covers the right half: background
    assert len(np.unique(pred[:, :16])) == 1 and pred[0, 0] > 0  # one winning foreground mask
    assert {"sclip", "prompts", "sam2_encoder", "sam2_decoder", "merge"} <= set(timings)


def test_dense_mode_with_pamr_runs(tiny_dense):
    predictor = ModePredictor(tiny_dense, None, SMALL, PRESETS["voc20"], mode="dense", use_pamr=True)
    pred, timings = predictor(rng_image(20, 28, seed=1))
    assert pred.shape == (20, 28) and pred.max() < 3 and "pamr" in timings


def test_sam_modes_with_random_sam2_tiny(tiny_dense):
    from clipsam.engine.backends.torch_reference import load_sam2
    from clipsam.engine.backends.torch_sam2 import Sam2Reference
    from clipsam.engine.model_choice import ModelChoice

    sam = Sam2Reference(load_sam2(ModelChoice(sam_random=True, seed=0)))
    vocabulary = SMALL
    image = rng_image(30, 40, seed=2)
    options = SegmentOptions(min_confidence=0.0, min_region_size=1, max_prompts=2)
    prompted = ModePredictor(
        tiny_dense, sam, vocabulary, SMALL_CONFIG, mode="prompted-sam", has_background=True, options=options
    )
    pred, timings = prompted(image)
    assert pred.shape == (30, 40) and 0 <= pred.min() and pred.max() < 3
    assert timings["sam2_decoder"] > 0
    vote = ModePredictor(tiny_dense, sam, vocabulary, SMALL_CONFIG, mode="sam-vote", vote_points_per_side=2)
    pred, timings = vote(image)
    assert pred.shape == (30, 40) and pred.max() < 3 and "vote" in timings
