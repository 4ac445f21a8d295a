"""What `clipsam eval --mode` predicts for one image: a class id per pixel in the benchmark's label space.

- dense: SCLIP's dense prediction (the published protocol).
- prompted-sam: the seed's CLIP-guided SAM2: one point prompt per confident dense region (`extract_prompts`),
  SAM2 masks, merged by `merge_candidates`, painted with their prompt's class (the best mask wins a pixel).
  Pixels no mask covers are background (class 0) when the benchmark has a background class, else they keep
  the dense class (there is no class to fall back to).
- sam-vote: SAM2 regions vote (CorrCLIP-style): a grid of points_per_side² point prompts gives one mask each
  (the best of the 3 multimask outputs); masks with predicted IoU ≥ VOTE_MIN_IOU claim their still-unclaimed
  pixels in descending predicted IoU; each region then takes the majority dense class inside it. Unclaimed
  pixels keep the dense class.
PAMR (optional) refines the query logits before the softmax in every mode, as SCLIP does.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from clipsam.engine.dense_clip import DenseConfig, DensePredictor
from clipsam.engine.pamr import pamr
from clipsam.engine.pipeline import DenseBackend, MaskBackend, SegmentOptions, merge_any, segment_prompts
from clipsam.engine.transforms import resize_bilinear, sclip_preprocess
from clipsam.engine.types import DenseMap, MaskCandidates, Prompts
from clipsam.engine.vocabulary import Vocabulary
from clipsam.kernels import rle as rle_codec

MODES = ("dense", "prompted-sam", "sam-vote")
VOTE_MIN_IOU = 0.5


class StageClock:
    """Milliseconds per named stage of one image."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.ms[name] = self.ms.get(name, 0.0) + (time.perf_counter() - start) * 1000.0


class ModePredictor:
    """Image → label map for one `--mode`. Text features are computed once, here (timed in setup_ms).

    dense: SCLIP backend (encode_crops / encode_queries / patch_size). masks: SAM2 backend (set_image /
    predict); unused (may be None) in dense mode. has_background: class 0 is the benchmark's background.
    """

    def __init__(
        self,
        dense: DenseBackend,
        masks: MaskBackend | None,
        vocabulary: Vocabulary,
        config: DenseConfig,
        *,
        mode: str = "dense",
        use_pamr: bool = False,
        has_background: bool = False,
        options: SegmentOptions | None = None,
        vote_points_per_side: int = 16,
    ):
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}")
        if mode != "dense" and masks is None:
            raise ValueError(f"mode {mode} needs a SAM2 backend")
        start = time.perf_counter()
        text = dense.encode_queries(vocabulary.queries)
        self.setup_ms = {"text": (time.perf_counter() - start) * 1000.0}
        self.dense = DensePredictor(dense.encode_crops, text, vocabulary, config, patch_size=dense.patch_size)
        self.masks = masks
        self.mode = mode
        self.use_pamr = use_pamr
        self.has_background = has_background
        self.options = options or SegmentOptions()
        self.vote_points_per_side = vote_points_per_side

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
        """uint8 [H, W, 3] RGB → (int32 [H, W] class ids in the image frame, ms per stage)."""
        clock = StageClock()
        dense = self.dense_map(image, clock)
        if self.mode == "dense":
            return dense.pred, clock.ms
        if self.mode == "prompted-sam":
            return self._prompted(image, dense, clock), clock.ms
        return self._vote(image, dense, clock), clock.ms

    def dense_map(self, image: np.ndarray, clock: StageClock) -> DenseMap:
        """SCLIP's DenseMap in the image frame, PAMR applied to the query logits when asked."""
        config = self.dense.config
        out_hw = image.shape[:2]
        with clock.stage("sclip"):
            network = sclip_preprocess(image, config.short_side, config.long_cap)  # [3, h, w]
            logits = self.dense.slide_logits(network, out_hw=out_hw)  # [Q, H, W]
        if self.use_pamr:
            with clock.stage("pamr"):
                # SCLIP's guide: the normalised network image resized back to the image frame.
                guide = resize_bilinear(network, out_hw) if network.shape[1:] != out_hw else network
                logits = pamr(guide, logits)
        with clock.stage("postprocess"):
            probs, pred = self.dense.postprocess(logits)
        return DenseMap(probs=probs, pred=pred, class_names=self.dense.vocabulary.class_names)

    def _prompted(self, image: np.ndarray, dense: DenseMap, clock: StageClock) -> np.ndarray:
        options = self.options
        with clock.stage("prompts"):
            prompts = segment_prompts(dense, options, self.has_background)
        candidates = self._masks(image, prompts, clock, use_boxes=options.use_boxes)
        with clock.stage("merge"):
            merged = merge_any(candidates, options)
            pred = np.zeros_like(dense.pred) if self.has_background else dense.pred.copy()
            if merged:
                painted = rle_codec.decode([rle for _, _, rle in merged]).astype(bool)  # [H, W, N]
                for index in range(len(merged) - 1, -1, -1):  # worst first: the best mask paints last
                    pred[painted[:, :, index]] = merged[index][0]
        return pred

    def _vote(self, image: np.ndarray, dense: DenseMap, clock: StageClock) -> np.ndarray:
        height, width = dense.pred.shape
        with clock.stage("prompts"):
            prompts = grid_prompts(height, width, self.vote_points_per_side)
        candidates = self._masks(image, prompts, clock, use_boxes=False)
        with clock.stage("vote"):
            regions = claim_regions(candidates.masks, candidates.iou, VOTE_MIN_IOU)
            pred = majority_vote(regions, dense.pred, dense.probs.shape[0])
        return pred

    def _masks(
        self, image: np.ndarray, prompts: Prompts, clock: StageClock, use_boxes: bool
    ) -> MaskCandidates:
        if not len(prompts):
            return MaskCandidates.empty(*image.shape[:2])
        with clock.stage("sam2_encoder"):
            self.masks.set_image(image)
        with clock.stage("sam2_decoder"):
            return self.masks.predict(prompts, use_boxes=use_boxes)


def grid_prompts(height: int, width: int, points_per_side: int) -> Prompts:
    """points_per_side² positive points at the centres of a regular grid over the image (image frame),
    row-major; class 0 and score 1 (the class comes from the vote, not the prompt)."""
    steps = (np.arange(points_per_side, dtype=np.float32) + 0.5) / points_per_side
    ys, xs = np.meshgrid(steps * height, steps * width, indexing="ij")
    coords = np.floor(np.stack([xs.ravel(), ys.ravel()], axis=1))[:, None, :].astype(np.float32)
    count = coords.shape[0]
    return Prompts(
        coords=coords,
        labels=np.ones((count, 1), np.int32),
        class_ids=np.zeros(count, np.int32),
        scores=np.ones(count, np.float32),
        boxes=np.zeros((count, 4), np.float32),
        areas=np.zeros(count, np.int64),
    )


def claim_regions(masks: np.ndarray, iou: np.ndarray, min_iou: float) -> np.ndarray:
    """int32 [H, W] region index per pixel (−1 = none) from bool [B, H, W] masks and float32 [B] predicted
    IoUs: masks with iou ≥ min_iou, best first (stable), each claims the pixels no better mask claimed."""
    regions = np.full(masks.shape[1:], -1, np.int32)
    order = np.argsort(-iou, kind="stable")
    for index in order:
        if iou[index] < min_iou:
            break
        regions[masks[index] & (regions < 0)] = index
    return regions


def majority_vote(regions: np.ndarray, dense_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """int32 [H, W]: inside each region (int32 [H, W], −1 = none) the most frequent class of dense_pred
    (int [H, W]; ties → the lowest class id); outside every region the dense class."""
    pred = dense_pred.astype(np.int32).copy()
    inside = regions >= 0
    if not inside.any():
        return pred
    region_ids, compact = np.unique(regions[inside], return_inverse=True)
    votes = np.bincount(
        compact * num_classes + dense_pred[inside].astype(np.int64), minlength=len(region_ids) * num_classes
    ).reshape(len(region_ids), num_classes)
    pred[inside] = votes.argmax(axis=1)[compact]
    return pred
