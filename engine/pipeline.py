"""The pipeline composes the stages; it holds no algorithm of its own.

image → DenseMap (SCLIP) → Prompts → SAM2 image embedding + masks → merge → Segments (COCO RLE).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from clipsam.engine.dense_clip import DenseConfig, DensePredictor
from clipsam.engine.errors import VocabularyError
from clipsam.engine.merge import merge_candidates, merge_rles
from clipsam.engine.prompts import extract_prompts
from clipsam.engine.types import DenseMap, MaskCandidates, Prompts, RleCandidates, Segment, SegmentationResult
from clipsam.engine.vocabulary import Vocabulary, with_background
from clipsam.kernels import rle as rle_codec

BACKGROUND_NAME = "background"


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
    """The vocabulary of `--vocabulary` words. A word "background" becomes class 0 with SCLIP's background
    synonyms (minus words the user names as classes), displayed as "background"."""
    background_count = sum(word.strip().lower() == BACKGROUND_NAME for word in words)
    if background_count > 1:
        raise VocabularyError(f"duplicate class name '{BACKGROUND_NAME}': give each class once")
    wants_background = background_count == 1
    others = [word for word in words if word.strip().lower() != BACKGROUND_NAME]
    if not wants_background:
        return Vocabulary.from_words(others)
    vocabulary = Vocabulary.from_lines(with_background(others))
    return replace(vocabulary, class_names=(BACKGROUND_NAME, *vocabulary.class_names[1:]))


class Pipeline:
    """SCLIP dense map → prompts → SAM2 → merged segments, with per-stage wall times in milliseconds."""

    def __init__(self, dense: DenseBackend, masks: MaskBackend, *, models: dict, random_weights: bool):
        self.dense_backend = dense
        self.mask_backend = masks
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
        dense = self._dense_map(image, vocabulary, dense_config, timings)
        with timings.stage("prompts"):
            prompts = segment_prompts(dense, options, has_background(vocabulary))
        timings.count("num_prompts", len(prompts))
        with timings.stage("sam2_encoder"):
            if len(prompts):
                self.mask_backend.set_image(image)
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
    """Wall time per stage in milliseconds, plus counts, reported as one dict."""

    def __init__(self, progress: Callable[[str], None] | None):
        self.progress = progress
        self.values: dict[str, float] = {}

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
        self.values[name] = float(value)

    def finish(self) -> dict[str, float]:
        stages = {k: v for k, v in self.values.items() if not k.startswith("num_")}
        return {**self.values, "total": sum(stages.values())}
