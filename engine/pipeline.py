"""The pipeline composes the stages; it holds no algorithm of its own.

image → DenseMap (SCLIP) → Prompts → SAM2 image embedding + masks → merge → Segments (COCO RLE).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from clipsam.engine.dense_clip import DenseConfig, DensePredictor
from clipsam.engine.errors import ClipsamError
from clipsam.engine.merge import merge_candidates, merge_rles
from clipsam.engine.prompts import extract_prompts
from clipsam.engine.types import DenseMap, MaskCandidates, Prompts, RleCandidates, Segment, SegmentationResult
from clipsam.engine.user_prompts import prompt_class_names, user_prompt_groups
from clipsam.engine.vocabulary import BACKGROUND_NAME, Vocabulary, user_vocabulary
from clipsam.kernels import rle as rle_codec


class DenseBackend(Protocol):
    """SCLIP features: image crops to L2-normalised patch features, and a vocabulary to text features."""

    def encode_crops(self, crops: np.ndarray) -> np.ndarray:
        """float32 [N, 3, S, S] normalised crops → float32 [N, L, D] normalised patch features."""

    @property
    def patch_size(self) -> int: ...

    def encode_queries(self, queries: Sequence[str]) -> np.ndarray:
        """float32 [Q, D] normalised text features, one per query word."""


class MaskBackend(Protocol):
    """SAM2: one image embedding per image, then masks for prompts in the image frame."""

    def set_image(self, image: np.ndarray) -> None: ...

    def predict(self, prompts: Prompts, use_boxes: bool = False) -> MaskCandidates: ...


@dataclass(frozen=True)
class SegmentOptions:
    """User-facing thresholds of `clipsam segment` (see README → segment)."""

    min_confidence: float = 0.7
    min_region_size: int = 100
    iou_threshold: float = 0.8
    max_prompts: int | None = None
    use_boxes: bool = False


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


class Pipeline:
    """SCLIP dense map → prompts → SAM2 → merged segments, with per-stage wall times in milliseconds.

    Either stage may be None (an artifact folder exported with `--only`): a SAM2-only pipeline segments
    given points / boxes (`segment_with_prompts`), a SCLIP-only one gives dense maps; asking a pipeline for
    a stage it lacks is a ClipsamError. random_weights: any of its models has random weights; `models`
    says which (each model entry's "random_weights").
    """

    def __init__(
        self, dense: DenseBackend | None, masks: MaskBackend | None, *, models: dict, random_weights: bool
    ):
        self._dense = dense
        self._masks = masks
        self.models = models
        self.random_weights = random_weights

    @classmethod
    def from_artifacts(
        cls,
        directory,
        backend: str = "onnxruntime",
        providers: str = "auto",
        decoder: str = "auto",
        precision: str = "exact",
    ) -> Pipeline:
        """The pipeline on exported graphs (see engine/artifacts.py); needs no torch."""
        from clipsam.engine.artifacts import pipeline_from_artifacts

        return pipeline_from_artifacts(directory, backend, providers, decoder, precision)

    @property
    def dense_backend(self) -> DenseBackend:
        if self._dense is None:
            raise ClipsamError(
                "these artifacts hold no SCLIP graph (exported with --only sam2): segment with point / box "
                "prompts (`segment --points x,y` or Pipeline.segment_with_prompts), or export SCLIP too"
            )
        return self._dense

    @property
    def mask_backend(self) -> MaskBackend:
        if self._masks is None:
            raise ClipsamError(
                "these artifacts hold no SAM2 graphs (exported with --only sclip): export SAM2 too "
                "(`clipsam export` without --only) to segment"
            )
        return self._masks

    def dense_map(
        self, image: np.ndarray, vocabulary: Vocabulary, config: DenseConfig | None = None
    ) -> DenseMap:
        """SCLIP's dense class map of uint8 [H, W, 3] RGB `image`."""
        return self._dense_map(image, vocabulary, config, _StageTimer(None))

    def segment(
        self,
        image: np.ndarray,
        vocabulary: Vocabulary,
        options: SegmentOptions | None = None,
        dense_config: DenseConfig | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> SegmentationResult:
        """Segment uint8 [H, W, 3] RGB `image` into instances of the vocabulary's classes.

        progress: called with each stage's name as it starts (the CLI shows it on stderr).
        """
        options = options or SegmentOptions()
        timings = _StageTimer(progress)
        masks = self.mask_backend  # before SCLIP runs: a pipeline without SAM2 fails at once
        dense = self._dense_map(image, vocabulary, dense_config, timings)
        with timings.stage("prompts"):
            prompts = segment_prompts(dense, options, has_background(vocabulary))
        timings.count("prompts", len(prompts))
        with timings.stage("sam2_encoder"):
            if len(prompts):
                masks.set_image(image)
        with timings.stage("sam2_decoder"):
            candidates = self.mask_candidates(prompts, options.use_boxes, image.shape[:2])
        with timings.stage("merge"):
            segments = encode_segments(merge_any(candidates, options), vocabulary.class_names)
        height, width = image.shape[:2]
        return SegmentationResult(
            height=height,
            width=width,
            class_names=vocabulary.class_names,
            segments=segments,
            random_weights=self.random_weights,
            models=self.models,
            timings_ms=timings.finish(),
            counts={**timings.counts, "segments": len(segments)},
        )

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
        height, width = image.shape[:2]
        groups = user_prompt_groups(
            _points_or_none(points_xy, 2), _points_or_none(boxes_xyxy, 4), (height, width)
        )
        timings = _StageTimer(progress)
        with timings.stage("sam2_encoder"):
            self.mask_backend.set_image(image)
        with timings.stage("sam2_decoder"):
            candidates = [
                self.mask_candidates(prompts, use_boxes, (height, width)) for prompts, use_boxes in groups
            ]
        with timings.stage("merge"):  # no merge: each prompt keeps its mask; only encoded to RLE
            triples = [triple for group in candidates for triple in _unmerged(group)]
            names = prompt_class_names(len(triples))
            segments = encode_segments(triples, names)
        timings.count("prompts", len(triples))
        return SegmentationResult(
            height=height,
            width=width,
            class_names=names,
            segments=segments,
            random_weights=self.random_weights,
            models=self.models,
            timings_ms=timings.finish(),
            counts={**timings.counts, "segments": len(segments)},
        )

    def mask_candidates(self, prompts: Prompts, use_boxes: bool, image_hw) -> MaskCandidates | RleCandidates:
        """The mask stage's output: RLEs straight from the backend when it can (exported graphs: bounded
        memory for many prompts on large images), else dense masks (the torch reference)."""
        if len(prompts) == 0:
            return MaskCandidates.empty(*image_hw)
        if hasattr(self.mask_backend, "predict_rles"):
            return self.mask_backend.predict_rles(prompts, use_boxes=use_boxes)
        return self.mask_backend.predict(prompts, use_boxes=use_boxes)

    def _dense_map(self, image, vocabulary, config, timings) -> DenseMap:
        config = config or default_dense_config(vocabulary)
        with timings.stage("text"):
            text_features = self.dense_backend.encode_queries(vocabulary.queries)
        with timings.stage("sclip"):
            backend = self.dense_backend
            predictor = DensePredictor(
                backend.encode_crops, text_features, vocabulary, config, patch_size=backend.patch_size
            )
            return predictor.predict(image)


def segment_prompts(dense: DenseMap, options: SegmentOptions, background: bool) -> Prompts:
    """The prompts `segment` gives SAM2: the dense map's regions that pass the options' thresholds; with a
    background class (class 0) that class gets none."""
    return extract_prompts(
        dense,
        min_confidence=options.min_confidence,
        min_region_size=options.min_region_size,
        max_prompts=options.max_prompts,
        skip_classes=(0,) if background else (),
    )


def merge_any(candidates: MaskCandidates | RleCandidates, options: SegmentOptions) -> list:
    """merge_rles or merge_candidates with the options' thresholds → (class_id, score, RLE) triples."""
    thresholds = {"iou_threshold": options.iou_threshold, "min_region_size": options.min_region_size}
    if isinstance(candidates, RleCandidates):
        return merge_rles(candidates.rles, candidates.class_ids, candidates.scores, **thresholds)
    return merge_candidates(candidates, **thresholds)


def _points_or_none(values: np.ndarray | None, width: int) -> np.ndarray:
    return np.zeros((0, width), np.float32) if values is None else np.asarray(values, np.float32)


def _unmerged(candidates: MaskCandidates | RleCandidates) -> list[tuple[int, float, dict]]:
    """(class_id, score, COCO RLE with bytes counts) of every candidate, in order, as merge_any returns."""
    if isinstance(candidates, RleCandidates):
        rles = candidates.rles
    else:
        rles = rle_codec.encode_batch(candidates.masks) if len(candidates) else []
    return list(zip(candidates.class_ids.tolist(), candidates.scores.tolist(), rles, strict=True))


def encode_segments(merged: list[tuple[int, float, dict]], class_names: tuple[str, ...]) -> tuple:
    """Merged (class_id, score, COCO RLE) triples → Segments with area and bbox from the RLE kernels."""
    if not merged:
        return ()
    rles = [rle for _, _, rle in merged]
    areas = rle_codec.area(rles)
    boxes = rle_codec.toBbox(rles)
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


class _StageTimer:
    """Wall time per stage in milliseconds (`finish`: the stages and their "total") and, apart, counts."""

    def __init__(self, progress: Callable[[str], None] | None):
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
