"""What `clipsam eval --mode` predicts for one image: a class id per pixel in the benchmark's label space.

- dense: SCLIP's dense prediction (the published protocol).
- prompted-sam: the seed's CLIP-guided SAM2: one point prompt per confident dense region (`Pipeline.prompts`),
  SAM2 masks, merged by `merge_any`, painted with their prompt's class (the best mask wins a pixel).
  Pixels no mask covers are background (class 0) when the benchmark has a background class, else they keep
  the dense class (there is no class to fall back to).
- sam-vote: SAM2 regions vote (CorrCLIP-style): a grid of points_per_side² point prompts gives one mask each
  (the best of the 3 multimask outputs); masks with predicted IoU ≥ VOTE_MIN_IOU claim their still-unclaimed
  pixels in descending predicted IoU; each region then takes the majority dense class inside it. Unclaimed
  pixels keep the dense class.
- regions: issue 26's accuracy mode (engine/regions.py): SAM2's grid regions restrict SCLIP's last-block
  attention to each region (`Pipeline.features` with the RegionMap), then vote inside each region
  (`Pipeline.vote`); the label map is the voted pred.
PAMR (optional) refines the query logits before the softmax in every mode, as SCLIP does.

Every mode composes the Pipeline's public stage methods (engine/pipeline.py); nothing here repeats them.
Stage timings (ms, per image): sclip (SCLIP's patch features), pamr, postprocess (the dense map from the
features: window logits, resize to the image frame, softmax; PAMR's time excluded), prompts, sam2_encoder,
sam2_decoder, merge (prompted-sam) or vote (sam-vote); regions: sam2_encoder, regions_decode, sclip, pamr,
postprocess, regions_vote.
"""

from __future__ import annotations

import numpy as np

from clipsam.engine.dense_clip import DenseConfig, RefineLogits
from clipsam.engine.eval.pamr import pamr
from clipsam.engine.pipeline import Pipeline, SegmentOptions, StageTimer, merge_any
from clipsam.engine.prompts import grid_prompts
from clipsam.engine.regions import RegionOptions
from clipsam.engine.transforms import resize_bilinear, sclip_preprocess
from clipsam.engine.types import DenseMap, MaskCandidates, Prompts, RegionMap, RleCandidates
from clipsam.engine.vocabulary import Vocabulary
from clipsam.kernels import rle as rle_codec

MODES = ("dense", "prompted-sam", "sam-vote", "regions")
VOTE_MIN_IOU = 0.5


class ModePredictor:
    """Image → label map for one `--mode` on `pipeline`. Text features are computed once, here (timed in
    setup_ms["text"]).

    pipeline: needs its dense stage; the SAM2 stage too unless mode is "dense" (a ClipsamError here, before
    any image, when it has none). config: the dataset's DenseConfig. has_background: class 0 is the
    benchmark's background. Holds no per-image state.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        vocabulary: Vocabulary,
        config: DenseConfig,
        *,
        mode: str = "dense",
        use_pamr: bool = False,
        has_background: bool = False,
        options: SegmentOptions | None = None,
        vote_points_per_side: int = 16,
        region_options: RegionOptions | None = None,
    ):
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}")
        if mode != "dense":
            pipeline.mask_stage  # noqa: B018 - a pipeline without SAM2 fails now, not at the first image
        setup = StageTimer()
        with setup.stage("text"):
            self.text = pipeline.text(vocabulary)
        self.setup_ms = dict(setup.values)
        self.pipeline = pipeline
        self.config = config
        self.mode = mode
        self.use_pamr = use_pamr
        self.has_background = has_background
        self.options = options or SegmentOptions()
        self.vote_points_per_side = vote_points_per_side
        self.region_options = region_options or RegionOptions()

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
        """uint8 [H, W, 3] RGB → (int32 [H, W] class ids in the image frame, ms per stage)."""
        timer = StageTimer()
        if self.mode == "regions":
            return self._regions(image, timer), timer.values
        dense = self.dense_map(image, timer)
        if self.mode == "dense":
            return dense.pred, timer.values
        if self.mode == "prompted-sam":
            return self._prompted(image, dense, timer), timer.values
        return self._vote(image, dense, timer), timer.values

    def dense_map(self, image: np.ndarray, timer: StageTimer, regions: RegionMap | None = None) -> DenseMap:
        """SCLIP's DenseMap in the image frame, PAMR applied to the query logits when asked; with `regions`
        the last block's attention restricted to them."""
        with timer.stage("sclip"):
            features = self.pipeline.features(image, self.config, regions)
        refine = self._pamr(image, timer) if self.use_pamr else None
        with timer.stage("postprocess"):
            dense = self.pipeline.dense_map(features, self.text, self.config, refine=refine)
        if self.use_pamr:  # PAMR ran inside dense_map, timed apart: postprocess keeps only its own time
            timer.values["postprocess"] -= timer.values.get("pamr", 0.0)
        return dense

    def _pamr(self, image: np.ndarray, timer: StageTimer) -> RefineLogits:
        """PAMR on the query logits float32 [Q, H, W] (image frame), timed as "pamr"."""

        def refine(logits: np.ndarray) -> np.ndarray:
            with timer.stage("pamr"):
                # SCLIP's guide: the normalised network image resized back to the image frame.
                network = sclip_preprocess(image, self.config.short_side, self.config.long_cap)  # [3, h, w]
                out_hw = image.shape[:2]
                guide = resize_bilinear(network, out_hw) if network.shape[1:] != out_hw else network
                return pamr(guide, logits)

        return refine

    def _prompted(self, image: np.ndarray, dense: DenseMap, timer: StageTimer) -> np.ndarray:
        options = self.options
        with timer.stage("prompts"):
            prompts = self.pipeline.prompts(dense, options, self.has_background)
        candidates = self._candidates(image, prompts, timer, options.use_boxes, dense_masks=False)
        with timer.stage("merge"):
            merged = merge_any(candidates, options)
            pred = np.zeros_like(dense.pred) if self.has_background else dense.pred.copy()
            if merged:
                painted = rle_codec.decode([rle for _, _, rle in merged]).astype(bool)  # [H, W, N]
                for index in range(len(merged) - 1, -1, -1):  # worst first: the best mask paints last
                    pred[painted[:, :, index]] = merged[index][0]
        return pred

    def _vote(self, image: np.ndarray, dense: DenseMap, timer: StageTimer) -> np.ndarray:
        height, width = dense.pred.shape
        with timer.stage("prompts"):
            prompts = grid_prompts(height, width, self.vote_points_per_side**2)
        candidates = self._candidates(image, prompts, timer, use_boxes=False, dense_masks=True)
        with timer.stage("vote"):
            regions = claim_regions(candidates.masks, candidates.iou, VOTE_MIN_IOU)
            pred = majority_vote(regions, dense.pred, dense.probs.shape[0])
        return pred

    def _regions(self, image: np.ndarray, timer: StageTimer) -> np.ndarray:
        """The accuracy mode: embed, region decode, features with regions, dense map, vote → pred [H, W]."""
        with timer.stage("sam2_encoder"):
            embedding = self.pipeline.embed(image)
        with timer.stage("regions_decode"):
            regions = self.pipeline.regions(embedding, self.region_options)
        dense = self.dense_map(image, timer, regions)
        with timer.stage("regions_vote"):
            return self.pipeline.vote(dense, regions).pred

    def _candidates(
        self, image: np.ndarray, prompts: Prompts, timer: StageTimer, use_boxes: bool, dense_masks: bool
    ) -> RleCandidates | MaskCandidates:
        """SAM2's mask per prompt: RLEs, or bool [B, H, W] masks when `dense_masks`; none without prompts."""
        if not len(prompts):
            return MaskCandidates.empty(*image.shape[:2]) if dense_masks else RleCandidates.empty()
        with timer.stage("sam2_encoder"):
            embedding = self.pipeline.embed(image)
        with timer.stage("sam2_decoder"):
            if dense_masks:
                return self.pipeline.decode_masks(embedding, prompts, use_boxes)
            return self.pipeline.decode(embedding, prompts, use_boxes)


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
