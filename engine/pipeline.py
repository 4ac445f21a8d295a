"""The pipeline composes the stages; it holds no algorithm of its own.

image → PatchFeatures + TextFeatures → DenseMap (SCLIP) → Prompts → ImageEmbedding → RleCandidates (SAM2)
→ Segments (merge, COCO RLE). Each arrow is a public method; `segment` is those methods in order, timed.
Eval modes, bench and the server compose the same methods. The Pipeline keeps no per-image state: one
instance serves several threads at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from clipsam.engine.dense_clip import DenseConfig, RefineLogits
from clipsam.engine.errors import ClipsamError
from clipsam.engine.merge import merge_candidates, merge_rles
from clipsam.engine.prompts import extract_prompts, prompt_class_names, user_prompt_groups
from clipsam.engine.regions import RegionOptions, region_prompts, regions_from_candidates, vote
from clipsam.engine.stages import DenseStage, MaskStage
from clipsam.engine.types import (
    DenseMap,
    ImageEmbedding,
    MaskCandidates,
    PatchFeatures,
    Prompts,
    RegionMap,
    RleCandidates,
    Segment,
    SegmentationResult,
    Segments,
    TextFeatures,
)
from clipsam.engine.vocabulary import BACKGROUND_NAME, Vocabulary, user_vocabulary
from clipsam.kernels import rle as rle_codec


@dataclass(frozen=True)
class SegmentOptions:
    """User-facing thresholds of `clipsam segment` (see README → segment)."""

    min_confidence: float = 0.7
    min_region_size: int = 100
    iou_threshold: float = 0.8
    max_prompts: int | None = None
    use_boxes: bool = False
    regions: RegionOptions | None = None  # the accuracy mode (issue 26, `--regions`); None = off


def default_dense_config(vocabulary: Vocabulary) -> DenseConfig:
    """Short side 336 and SCLIP's settings: with a background class, logit scale 50 and prob_thd 0.1 (as
    for Context60 / COCO-Object); without one, logit scale 40 and no threshold (a low-confidence pixel has no
    class to fall back to)."""
    if has_background(vocabulary):
        return DenseConfig(short_side=336, logit_scale=50.0, prob_thd=0.1)
    return DenseConfig(short_side=336, logit_scale=40.0, prob_thd=0.0)


def has_background(vocabulary: Vocabulary) -> bool:
    """Class 0 is the background class (it gets no prompts and takes the pixels below prob_thd)."""
    return vocabulary.class_names[0].lower() == BACKGROUND_NAME


def vocabulary_from_words(words: list[str]) -> Vocabulary:
    """The vocabulary of `--vocabulary` words: engine/vocabulary.py's `user_vocabulary` (a word "background"
    becomes class 0 with SCLIP's background synonyms)."""
    return user_vocabulary(words)


class StageTimer:
    """Wall time per stage in milliseconds (`finish`: the stages and their "total") and, apart, counts.

    progress: called with each stage's name as it starts (the CLI shows it on stderr).
    """

    def __init__(self, progress: Callable[[str], None] | None = None):
        self.progress = progress
        self.values: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self.progress is not None:
            self.progress(name)
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = (time.perf_counter() - start) * 1000.0
            self.values[name] = self.values.get(name, 0.0) + elapsed

    def count(self, name: str, value: int) -> None:
        self.counts[name] = int(value)

    def finish(self) -> dict[str, float]:
        return {**self.values, "total": sum(self.values.values())}


@dataclass(frozen=True)
class Encoded:
    """An image between `segment_start` and `segment_finish` (embedding None: no prompt was found)."""

    image: np.ndarray
    vocabulary: Vocabulary
    options: SegmentOptions
    timer: StageTimer
    prompts: Prompts
    embedding: ImageEmbedding | None


class Pipeline:
    """SCLIP dense map → prompts → SAM2 → merged segments, as public stage methods.

    Either stage may be None (an artifact folder exported with `--only`): a SAM2-only pipeline segments
    given points / boxes (`segment_with_prompts`), a SCLIP-only one gives dense maps; asking a pipeline for
    a stage it lacks is a ClipsamError. random_weights: any of its models has random weights; `models`
    says which (each model entry's "random_weights") and how they run (the JSON's "models").
    """

    def __init__(
        self, dense: DenseStage | None, masks: MaskStage | None, *, models: dict, random_weights: bool
    ):
        self._dense = dense
        self._masks = masks
        self.models = models
        self.random_weights = random_weights

    @property
    def has_dense(self) -> bool:
        return self._dense is not None

    @property
    def has_masks(self) -> bool:
        return self._masks is not None

    @property
    def dense_stage(self) -> DenseStage:
        if self._dense is None:
            raise ClipsamError(
                "these artifacts hold no SCLIP graph (exported with --only sam2): segment with point / box "
                "prompts (`segment --points x,y` or Pipeline.segment_with_prompts), or export SCLIP too"
            )
        return self._dense

    @property
    def mask_stage(self) -> MaskStage:
        if self._masks is None:
            raise ClipsamError(
                "these artifacts hold no SAM2 graphs (exported with --only sclip): export SAM2 too "
                "(`clipsam export` without --only) to segment"
            )
        return self._masks

    # --- the stages -------------------------------------------------------------------------------------

    def text(self, vocabulary: Vocabulary) -> TextFeatures:
        """CLIP text features of the vocabulary's queries."""
        return self.dense_stage.text(vocabulary)

    def features(
        self, image: np.ndarray, config: DenseConfig | None = None, regions: RegionMap | None = None
    ) -> PatchFeatures:
        """SCLIP's patch features of uint8 [H, W, 3] RGB `image` (vocabulary-free; config: resize and
        windows, default short side 336); with `regions` the last block attends within regions (issue 26)."""
        if regions is None:  # plain SCLIP: the protocol's two-argument call, as every stage implements it
            return self.dense_stage.features(image, config or DenseConfig())
        return self.dense_stage.features(image, config or DenseConfig(), regions)

    def regions(self, embedding: ImageEmbedding, options: RegionOptions) -> RegionMap:
        """SAM2's class-agnostic regions of the embedded image: the grid prompts decoded in one call, kept,
        de-duplicated and painted (engine/regions.py)."""
        prompts = region_prompts(embedding.image_hw, options)
        return regions_from_candidates(self.decode(embedding, prompts), embedding.image_hw, options)

    def vote(self, dense: DenseMap, regions: RegionMap) -> DenseMap:
        """The dense map's pred corrected by a majority vote inside each region (probabilities kept)."""
        return vote(dense, regions)

    def dense_map(
        self,
        features: PatchFeatures,
        text: TextFeatures,
        config: DenseConfig | None = None,
        refine: RefineLogits | None = None,
    ) -> DenseMap:
        """The dense class map (config default: `default_dense_config(text.vocabulary)`)."""
        config = config or default_dense_config(text.vocabulary)
        return self.dense_stage.dense_map(features, text, config, refine)

    def prompts(self, dense: DenseMap, options: SegmentOptions, background: bool) -> Prompts:
        """The dense map's regions that pass the options' thresholds; with a background class (class 0)
        that class gets none."""
        return extract_prompts(
            dense,
            min_confidence=options.min_confidence,
            min_region_size=options.min_region_size,
            max_prompts=options.max_prompts,
            skip_classes=(0,) if background else (),
        )

    def embed(self, image: np.ndarray) -> ImageEmbedding:
        """SAM2's image embedding of uint8 [H, W, 3] RGB `image`."""
        return self.mask_stage.embed(image)

    def decode(self, embedding: ImageEmbedding, prompts: Prompts, use_boxes: bool = False) -> RleCandidates:
        """Each prompt's SAM2 mask (best of 3 by predicted IoU) as a COCO RLE."""
        return self.mask_stage.decode(embedding, prompts, use_boxes)

    def decode_masks(
        self, embedding: ImageEmbedding, prompts: Prompts, use_boxes: bool = False
    ) -> MaskCandidates:
        """`decode` with dense masks bool [B, H, W] (memory grows with prompts × pixels)."""
        return self.mask_stage.decode_masks(embedding, prompts, use_boxes)

    def merge(
        self,
        candidates: RleCandidates | MaskCandidates,
        options: SegmentOptions,
        class_names: tuple[str, ...],
    ) -> Segments:
        """De-duplicated, overlap-resolved Segments (merge_any with the options' thresholds)."""
        return encode_segments(merge_any(candidates, options), class_names)

    # --- compositions -----------------------------------------------------------------------------------

    def dense(
        self,
        image: np.ndarray,
        vocabulary: Vocabulary,
        config: DenseConfig | None = None,
        regions: RegionOptions | None = None,
    ) -> DenseMap:
        """SCLIP's dense class map of uint8 [H, W, 3] RGB `image`: text, features, dense_map; with `regions`
        (the accuracy mode) embed, regions, features with regions, dense_map, vote."""
        config = config or default_dense_config(vocabulary)
        if regions is None:
            return self.dense_map(self.features(image, config), self.text(vocabulary), config)
        region_map = self.regions(self.embed(image), regions)
        dense = self.dense_map(self.features(image, config, region_map), self.text(vocabulary), config)
        return self.vote(dense, region_map)

    def segment(
        self,
        image: np.ndarray,
        vocabulary: Vocabulary,
        options: SegmentOptions | None = None,
        dense_config: DenseConfig | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> SegmentationResult:
        """Segment uint8 [H, W, 3] RGB `image` into instances of the vocabulary's classes."""
        return self.segment_finish(self.segment_start(image, vocabulary, options, dense_config, progress))

    def segment_start(
        self,
        image: np.ndarray,
        vocabulary: Vocabulary,
        options: SegmentOptions | None = None,
        dense_config: DenseConfig | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> Encoded:
        """`segment`'s first half, the encoders (a batch runs the next image's while this one finishes)."""
        options = options or SegmentOptions()
        config = dense_config or default_dense_config(vocabulary)
        timer = StageTimer(progress)
        self.mask_stage  # noqa: B018 - before SCLIP runs: a pipeline without SAM2 fails at once
        with timer.stage("text"):
            text = self.text(vocabulary)
        if options.regions is None:
            with timer.stage("sclip"):
                dense = self.dense_map(self.features(image, config), text, config)
            embedding = None
        else:
            dense, embedding = self._dense_with_regions(image, text, config, options.regions, timer)
        with timer.stage("prompts"):
            prompts = self.prompts(dense, options, has_background(vocabulary))
        timer.count("prompts", len(prompts))
        if embedding is None:
            with timer.stage("sam2_encoder"):
                embedding = self.embed(image) if len(prompts) else None
        return Encoded(image, vocabulary, options, timer, prompts, embedding)

    def segment_finish(self, encoded: Encoded) -> SegmentationResult:
        """`segment`'s second half: SAM2's decoder for all prompts at once, merge, COCO RLE."""
        options, timer, embedding = encoded.options, encoded.timer, encoded.embedding
        with timer.stage("sam2_decoder"):
            candidates = (
                None if embedding is None else self.decode(embedding, encoded.prompts, options.use_boxes)
            )
        with timer.stage("merge"):
            names = encoded.vocabulary.class_names
            segments = () if candidates is None else self.merge(candidates, options, names)
        models = None if options.regions is None else {**self.models, "regions": options.regions.record()}
        return self._result(encoded.image, names, segments, timer, models)

    def _dense_with_regions(
        self,
        image: np.ndarray,
        text: TextFeatures,
        config: DenseConfig,
        options: RegionOptions,
        timer: StageTimer,
    ) -> tuple[DenseMap, ImageEmbedding]:
        """The accuracy mode's stages, timed: embed, regions, features with regions + dense map, vote.
        The embedding is returned for the prompts' decode (SAM2's encoder runs once)."""
        with timer.stage("sam2_encoder"):
            embedding = self.embed(image)
        with timer.stage("regions_decode"):
            region_map = self.regions(embedding, options)
        timer.count("regions", region_map.count)
        with timer.stage("sclip"):
            dense = self.dense_map(self.features(image, config, region_map), text, config)
        with timer.stage("regions_vote"):
            dense = self.vote(dense, region_map)
        return dense, embedding

    def segment_with_prompts(
        self,
        image: np.ndarray,
        points_xy: np.ndarray | None = None,
        boxes_xyxy: np.ndarray | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> SegmentationResult:
        """SAM2 alone on the user's prompts: one segment per prompt, in prompt order, no merge.

        image: uint8 [H, W, 3] RGB. points_xy: float [N, 2] (x, y), one positive point per prompt;
        boxes_xyxy: float [M, 4] (x0, y0, x1, y1), one box per prompt; both in the image frame.
        Prompt i (points first) is class i, named "prompt i"; its mask is SAM2's best of 3 by predicted IoU
        (the same mask path as `segment`), its score that predicted IoU. An empty mask stays (area 0).
        """
        groups = user_prompt_groups(
            _points_or_none(points_xy, 2), _points_or_none(boxes_xyxy, 4), image.shape[:2]
        )
        timer = StageTimer(progress)
        with timer.stage("sam2_encoder"):
            embedding = self.embed(image)
        with timer.stage("sam2_decoder"):
            candidates = [self.decode(embedding, prompts, use_boxes) for prompts, use_boxes in groups]
        with timer.stage("merge"):  # no merge: each prompt keeps its mask; only encoded to RLE
            triples = [triple for group in candidates for triple in _unmerged(group)]
            names = prompt_class_names(len(triples))
            segments = encode_segments(triples, names)
        timer.count("prompts", len(triples))
        return self._result(image, names, segments, timer)

    def _result(
        self,
        image: np.ndarray,
        class_names: tuple[str, ...],
        segments: Segments,
        timer: StageTimer,
        models: dict | None = None,
    ) -> SegmentationResult:
        return SegmentationResult(
            *image.shape[:2],  # height, width
            class_names=class_names,
            segments=segments,
            random_weights=self.random_weights,
            models=self.models if models is None else models,
            timings_ms=timer.finish(),
            counts={**timer.counts, "segments": len(segments)},
        )


def merge_any(candidates: MaskCandidates | RleCandidates, options: SegmentOptions) -> list:
    """merge_rles or merge_candidates with the options' thresholds → (class_id, score, RLE) triples."""
    thresholds = {"iou_threshold": options.iou_threshold, "min_region_size": options.min_region_size}
    if isinstance(candidates, RleCandidates):
        return merge_rles(candidates.rles, candidates.class_ids, candidates.scores, **thresholds)
    return merge_candidates(candidates, **thresholds)


def _points_or_none(values: np.ndarray | None, width: int) -> np.ndarray:
    return np.zeros((0, width), np.float32) if values is None else np.asarray(values, np.float32)


def _unmerged(candidates: RleCandidates) -> list[tuple[int, float, dict]]:
    """(class_id, score, COCO RLE with bytes counts) of every candidate, in order, as merge_any returns."""
    return list(zip(candidates.class_ids.tolist(), candidates.scores.tolist(), candidates.rles, strict=True))


def encode_segments(merged: list[tuple[int, float, dict]], class_names: tuple[str, ...]) -> Segments:
    """Merged (class_id, score, COCO RLE) triples → Segments with area and bbox from the RLE kernels."""
    if not merged:
        return ()
    rles = [rle for _, _, rle in merged]
    areas, boxes = rle_codec.area(rles), rle_codec.toBbox(rles)
    return tuple(
        Segment(
            class_id=int(class_id),
            class_name=class_names[class_id],
            score=float(score),
            bbox_xywh=tuple(float(v) for v in box),
            area=int(area),
            rle={"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")},
        )
        for (class_id, score, rle), area, box in zip(merged, areas, boxes, strict=True)
    )
