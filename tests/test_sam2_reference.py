"""The PyTorch SAM2 reference wrapper equals calling `sam2` directly (seeded random SAM2.1 tiny)."""

from __future__ import annotations

import numpy as np
import pytest

from clipsam.engine.types import ImageEmbedding, Prompts
from clipsam.kernels import rle as rle_codec
from clipsam.reference.sam2_predictor import Sam2Reference

# Not square, so a swapped x / y or H / W shows up.
HEIGHT, WIDTH = 40, 56


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def stage(sam2_tiny) -> Sam2Reference:
    return Sam2Reference(sam2_tiny)


@pytest.fixture(scope="module")
def embedding(stage, image) -> ImageEmbedding:
    embedding = stage.embed(image)
    stage.embed(np.zeros((HEIGHT + 8, WIDTH, 3), np.uint8))  # another image in between: decode must not care
    return embedding


@pytest.fixture(scope="module")
def direct_predictor(sam2_tiny, image):
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    predictor = SAM2ImagePredictor(sam2_tiny.module)
    predictor.set_image(image)
    return predictor


def _prompts() -> Prompts:
    return Prompts(
        coords=np.array([[[5, 7]], [[40, 30]], [[20, 12]]], np.float32),
        labels=np.ones((3, 1), np.int32),
        class_ids=np.array([2, 1, 2], np.int32),
        scores=np.array([0.9, 0.8, 0.75], np.float32),
        boxes=np.array([[0, 0, 12, 15], [30, 20, 56, 40], [10, 5, 35, 25]], np.float32),
        areas=np.array([150, 400, 300], np.int64),
    )


def _direct(predictor, prompts: Prompts, use_boxes: bool) -> tuple[np.ndarray, np.ndarray]:
    """Best-of-3 masks and IoUs straight from sam2's SAM2ImagePredictor."""
    masks, ious = [], []
    for i in range(len(prompts)):
        box = prompts.boxes[i] if use_boxes else None
        out_masks, out_iou, _ = predictor.predict(
            point_coords=prompts.coords[i], point_labels=prompts.labels[i], box=box, multimask_output=True
        )
        best = int(np.argmax(out_iou))
        masks.append(out_masks[best].astype(bool))
        ious.append(out_iou[best])
    return np.stack(masks), np.array(ious, np.float32)


@pytest.mark.parametrize("use_boxes", [False, True])
def test_reference_matches_sam2_directly(stage, embedding, direct_predictor, use_boxes):
    prompts = _prompts()
    cands = stage.decode_masks(embedding, prompts, use_boxes=use_boxes)
    want_masks, want_iou = _direct(direct_predictor, prompts, use_boxes)

    assert cands.masks.dtype == bool and cands.masks.shape == (3, HEIGHT, WIDTH)
    np.testing.assert_array_equal(cands.masks, want_masks)
    np.testing.assert_array_equal(cands.iou, want_iou)
    np.testing.assert_array_equal(cands.class_ids, prompts.class_ids)
    np.testing.assert_allclose(cands.scores, prompts.scores * want_iou, rtol=1e-6)
    assert cands.scores.dtype == np.float32


def test_boxes_reach_sam2(stage, embedding):
    prompts = _prompts()
    without = stage.decode_masks(embedding, prompts, use_boxes=False)
    with_boxes = stage.decode_masks(embedding, prompts, use_boxes=True)
    assert not np.array_equal(without.iou, with_boxes.iou)


def test_decode_is_decode_masks_as_rles(stage, embedding):
    prompts = _prompts()
    dense, rles = stage.decode_masks(embedding, prompts), stage.decode(embedding, prompts)
    decoded = rle_codec.decode(rles.rles).astype(bool)  # [H, W, B]
    np.testing.assert_array_equal(np.moveaxis(decoded, -1, 0), dense.masks)
    np.testing.assert_array_equal(rles.scores, dense.scores)
    np.testing.assert_array_equal(rles.class_ids, dense.class_ids)


def test_no_prompts_gives_empty_candidates(stage, embedding):
    cands = stage.decode_masks(embedding, Prompts.empty())
    assert len(cands) == 0
    assert cands.masks.shape == (0, HEIGHT, WIDTH) and cands.masks.dtype == bool
    assert cands.iou.shape == cands.scores.shape == cands.class_ids.shape == (0,)
    assert len(stage.decode(embedding, Prompts.empty()).rles) == 0


def test_refuses_another_stages_embedding(stage, embedding):
    foreign = ImageEmbedding(embedding.arrays, embedding.image_hw, "sam2.1-hiera-tiny:other:fast")
    with pytest.raises(ValueError, match="embedding of"):
        stage.decode_masks(foreign, _prompts())


def test_rejects_non_rgb_uint8_image(stage):
    with pytest.raises(ValueError, match="uint8"):
        stage.embed(np.zeros((HEIGHT, WIDTH), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        stage.embed(np.zeros((HEIGHT, WIDTH, 3), np.float32))
