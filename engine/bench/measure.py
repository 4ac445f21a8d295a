"""Latency measurement of clipsam pipelines (`clipsam bench` and the regression gate).

A bench name ("torch", "onnxruntime", "onnxruntime-bf16", …: engine/backends' `pipeline_names()`) is built by
the one factory, `load_pipeline`. A stage runner times one stage of one pipeline per image by composing the
Pipeline's public stage methods; untimed preparation (the image embedding before a decoder run, the prompts)
is cached per image so warm-up and timed runs measure the stage alone. With a reference pipeline the runs
are interleaved, alternating which goes first, so machine drift hits both sides: on a shared machine the
ratio is the stable figure, and the regression gate compares ratios.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from clipsam.engine.backends import resolve_pipeline_name
from clipsam.engine.bench.demo_scene import DEMO_VOCABULARY, demo_scene
from clipsam.engine.errors import ClipsamError
from clipsam.engine.models.choice import ModelChoice
from clipsam.engine.pipeline import (
    Pipeline,
    SegmentOptions,
    StageTimer,
    default_dense_config,
    has_background,
    vocabulary_from_words,
)
from clipsam.engine.prompts import grid_prompts
from clipsam.engine.regions import RegionOptions
from clipsam.engine.types import DenseMap, ImageEmbedding, Prompts, RleCandidates, SegmentationResult
from clipsam.engine.vocabulary import Vocabulary

STAGES = ("dense", "encoder", "decoder", "kernels", "end-to-end", "regions")
PROMPT_CAP = 128  # real prompts: at most this many, the most confident first
# The options of every bench stage: all of the dense map's regions (min confidence 0, at most PROMPT_CAP),
# the default merge thresholds.
BENCH_OPTIONS = SegmentOptions(min_confidence=0.0, max_prompts=PROMPT_CAP)


@dataclass(frozen=True)
class PipelineSpec:
    """What the factory needs: `choice` (weights) for torch, `artifacts` (an export folder) for the rest;
    without artifacts, the exported backends run the engine cache's folder for `choice`."""

    choice: ModelChoice | None = None
    artifacts: Path | None = None
    providers: str = "auto"


def needs_artifacts(name: str) -> bool:
    """Whether bench name `name` runs an export folder (a ClipsamError lists the names for an unknown one)."""
    return resolve_pipeline_name(name)[0].needs_artifacts


def build_pipeline(name: str, spec: PipelineSpec) -> Pipeline:
    """The pipeline of bench name `name` from `clipsam.engine.factory.load_pipeline`; --providers goes only to
    a backend that takes it (with --compare-to torch it is the measured side's)."""
    from clipsam.engine.factory import load_pipeline

    info, _ = resolve_pipeline_name(name)
    if not info.needs_artifacts:
        return load_pipeline(None, name, models=spec.choice)
    providers = spec.providers if info.takes_providers else "auto"
    models = spec.choice if spec.artifacts is None else None
    return load_pipeline(spec.artifacts, name, providers=providers, models=models)


@dataclass(frozen=True)
class BenchConfig:
    """stage: one of STAGES. prompts: a fixed grid of this many prompts, or None for the dense map's own.
    region_points: the "regions" stage's grid points per side (end to end in the accuracy mode, issue 26:
    its timings add regions_decode and regions_vote)."""

    stage: str = "end-to-end"
    warmup: int = 1
    runs: int = 5
    prompts: int | None = None
    region_points: int = 8

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ClipsamError(f"unknown stage '{self.stage}'; choose one of: {', '.join(STAGES)}")
        if self.warmup < 0 or self.runs < 1 or (self.prompts is not None and self.prompts < 1):
            raise ClipsamError("--warmup must be >= 0, --runs >= 1 and --prompts >= 1")


def parse_size(text: str) -> tuple[int, int]:
    """ "480x640" → (height 480, width 640)."""
    parts = text.lower().replace("×", "x").split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise ClipsamError(f"bad --size '{text}': give HEIGHTxWIDTH in pixels, e.g. 480x640")
    return int(parts[0]), int(parts[1])


def bench_images(folder: Path | None, size: tuple[int, int]) -> tuple[list[np.ndarray], str]:
    """uint8 [H, W, 3] RGB images: every PNG/JPEG in `folder`, else one generated street scene of `size`."""
    from clipsam.engine.image_io import IMAGE_SUFFIXES, load_image

    if folder is None:
        return [demo_scene(*size)], f"generated street scene {size[0]}x{size[1]}"
    if not Path(folder).is_dir():
        raise ClipsamError(f"--images '{folder}' is not a folder of images")
    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ClipsamError(f"no {'/'.join(IMAGE_SUFFIXES)} images in '{folder}'")
    return [load_image(p) for p in paths], f"{len(paths)} images from {folder}"


def real_prompts(pipeline: Pipeline, dense: DenseMap, vocabulary: Vocabulary) -> Prompts:
    """The dense map's regions as `Pipeline.segment` picks them under BENCH_OPTIONS (image frame)."""
    return pipeline.prompts(dense, BENCH_OPTIONS, has_background(vocabulary))


class PromptSource:
    """The prompts every compared pipeline gets for an image: a fixed grid (engine/prompts.py `grid_prompts`),
    or the dense map's own regions (`real_prompts`) from `pipeline`'s dense map, computed once per image."""

    def __init__(self, pipeline: Pipeline, vocabulary: Vocabulary, count: int | None):
        self.pipeline, self.vocabulary, self.count = pipeline, vocabulary, count
        self._dense: dict[int, DenseMap] = {}

    def dense_map(self, index: int, image: np.ndarray) -> DenseMap:
        if index not in self._dense:
            self._dense[index] = self.pipeline.dense(image, self.vocabulary)
        return self._dense[index]

    def prompts(self, index: int, image: np.ndarray) -> Prompts:
        if self.count is not None:
            return grid_prompts(*image.shape[:2], self.count, self.vocabulary.num_classes)
        return real_prompts(self.pipeline, self.dense_map(index, image), self.vocabulary)


class StageRunner:
    """Times one stage of one pipeline: call(index, image) → (timings ms incl. "total", stage output).

    Every stage is the Pipeline's public methods, timed with its StageTimer. The decoder and kernel stages
    embed an image untimed and reuse that ImageEmbedding while the image stays the same (one held at a time:
    memory stays flat over a folder of images).
    """

    def __init__(self, pipeline: Pipeline, stage: str, source: PromptSource, region_points: int = 8):
        self.pipeline, self.stage, self.source = pipeline, stage, source
        self.region_points = region_points
        self.vocabulary = source.vocabulary
        self._embedding: tuple[int, ImageEmbedding] | None = None
        self._candidates: dict[int, RleCandidates] = {}

    def __call__(self, index: int, image: np.ndarray) -> tuple[dict[str, float], object]:
        if self.stage == "end-to-end" and self.source.count is None:
            result = self.pipeline.segment(image, self.vocabulary, BENCH_OPTIONS)
            return {**result.timings_ms, "num_prompts": float(result.counts["prompts"])}, result
        if self.stage == "regions":
            regions = RegionOptions(self.region_points, min_region_size=BENCH_OPTIONS.min_region_size)
            result = self.pipeline.segment(image, self.vocabulary, replace(BENCH_OPTIONS, regions=regions))
            return {**result.timings_ms, "num_prompts": float(result.counts["prompts"])}, result
        run = {
            "dense": self._dense,
            "encoder": self._encoder,
            "decoder": self._decoder,
            "kernels": self._kernels,
            "end-to-end": self._end_to_end_fixed,
        }[self.stage]
        timer = StageTimer()
        output, num_prompts = run(timer, index, image)
        timings = timer.finish()
        if num_prompts is not None:
            timings["num_prompts"] = float(num_prompts)
        return timings, output

    def _dense(self, timer: StageTimer, index: int, image: np.ndarray) -> tuple[DenseMap, None]:
        config = default_dense_config(self.vocabulary)
        with timer.stage("text"):
            text = self.pipeline.text(self.vocabulary)
        with timer.stage("sclip"):
            dense = self.pipeline.dense_map(self.pipeline.features(image, config), text, config)
        return dense, None

    def _encoder(self, timer: StageTimer, index: int, image: np.ndarray) -> tuple[None, None]:
        with timer.stage("sam2_encoder"):
            embedding = self.pipeline.embed(image)
        self._embedding = (index, embedding)
        return None, None

    def _decoder(self, timer: StageTimer, index: int, image: np.ndarray) -> tuple[RleCandidates, int]:
        prompts = self.source.prompts(index, image)
        embedding = self._embedded(index, image)
        with timer.stage("sam2_decoder"):
            candidates = self.pipeline.decode(embedding, prompts)
        return candidates, len(prompts)

    def _kernels(self, timer: StageTimer, index: int, image: np.ndarray) -> tuple[tuple, int]:
        dense = self.source.dense_map(index, image)
        if index not in self._candidates:
            prompts = self.source.prompts(index, image)
            self._candidates[index] = self.pipeline.decode(self._embedded(index, image), prompts)
        candidates = self._candidates[index]
        with timer.stage("prompts"):
            real_prompts(self.pipeline, dense, self.vocabulary)
        with timer.stage("merge"):
            segments = self.pipeline.merge(candidates, BENCH_OPTIONS, self.vocabulary.class_names)
        return segments, len(candidates)

    def _end_to_end_fixed(
        self, timer: StageTimer, index: int, image: np.ndarray
    ) -> tuple[SegmentationResult, int]:
        """Pipeline.segment's stage methods in its order, differing ONLY by the prompts: the grid is the
        decoder batch (random weights give ~10 regions at 480×640; the floors are quoted at 128 prompts),
        while the dense map's own prompts are still computed and timed."""
        dense, _ = self._dense(timer, index, image)
        with timer.stage("prompts"):
            real_prompts(self.pipeline, dense, self.vocabulary)
        prompts = self.source.prompts(index, image)
        with timer.stage("sam2_encoder"):
            embedding = self.pipeline.embed(image)
        with timer.stage("sam2_decoder"):
            candidates = self.pipeline.decode(embedding, prompts)
        with timer.stage("merge"):
            segments = self.pipeline.merge(candidates, BENCH_OPTIONS, self.vocabulary.class_names)
        height, width = image.shape[:2]
        result = SegmentationResult(
            height=height,
            width=width,
            class_names=self.vocabulary.class_names,
            segments=segments,
            random_weights=self.pipeline.random_weights,
            models=self.pipeline.models,
            timings_ms=timer.finish(),
            counts={"prompts": len(prompts), "segments": len(segments)},
        )
        return result, len(prompts)

    def _embedded(self, index: int, image: np.ndarray) -> ImageEmbedding:
        """The image's embedding, untimed; computed again only when the image changes."""
        if self._embedding is None or self._embedding[0] != index:
            self._embedding = (index, self.pipeline.embed(image))
        return self._embedding[1]


def bench_vocabulary():
    """The demo vocabulary: its text features ship with every `clipsam export`."""
    return vocabulary_from_words(list(DEMO_VOCABULARY))


@dataclass(frozen=True)
class Measurement:
    """samples[name]: one timings dict (ms) per timed run; outputs[name]: the last timed run's output."""

    samples: dict[str, list[dict[str, float]]]
    outputs: dict[str, object]


def measure(
    runners: dict[str, Callable[[int, np.ndarray], tuple[dict[str, float], object]]],
    images: list[np.ndarray],
    config: BenchConfig,
    progress: Callable[[int, int], None] | None = None,
) -> Measurement:
    """Warm-up then timed runs of every runner, interleaved per step; images are used in turn."""
    names = list(runners)
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    outputs: dict[str, object] = {}
    steps = config.warmup + config.runs
    done = 0
    for step in range(steps):
        index = step % len(images)
        for name in names if step % 2 == 0 else names[::-1]:
            timings, output = runners[name](index, images[index])
            if step >= config.warmup:
                samples[name].append(timings)
                outputs[name] = output
            done += 1
            if progress is not None:
                progress(done, steps * len(names))
    return Measurement(samples, outputs)


def reference_choice(
    manifest_models: dict, clip_checkpoint: Path | None, sam_checkpoint: Path | None
) -> ModelChoice:
    """The torch ModelChoice with the weights an export was made from (its manifest's "models" record):
    the seed for random weights, else the checkpoint files, which the caller must name."""
    sclip, sam = manifest_models["sclip"], manifest_models["sam2"]
    clip_random, sam_random = sclip.get("seed") is not None, sam.get("seed") is not None
    if not clip_random and clip_checkpoint is None:
        raise ClipsamError(
            f"the artifacts' CLIP weights are {sclip['weights']}: pass that file with --clip-checkpoint"
        )
    if not sam_random and sam_checkpoint is None:
        raise ClipsamError(
            f"the artifacts' SAM2 weights are {sam['weights']}: pass that file with --checkpoint"
        )
    seeds = {seed for seed in (sclip.get("seed"), sam.get("seed")) if seed is not None}
    if len(seeds) > 1:
        raise ClipsamError(f"the artifacts use seeds {sorted(seeds)}; the torch reference takes one seed")
    return ModelChoice(
        clip_checkpoint=None if clip_random else Path(clip_checkpoint),
        clip_random=clip_random,
        sam_model=sam["name"],
        sam_checkpoint=None if sam_random else Path(sam_checkpoint),
        sam_random=sam_random,
        seed=seeds.pop() if seeds else 0,
    )


def check_same_weights(ours: Pipeline, reference: Pipeline) -> None:
    """Speedups are only meaningful between pipelines running the same weights."""
    for model in ("clip", "sam2"):
        mine, theirs = ours.models[model]["weights"], reference.models[model]["weights"]
        if mine != theirs:
            raise ClipsamError(
                f"the reference's {model} weights ({theirs}) differ from the measured ones ({mine}): "
                "pass the checkpoint the artifacts were exported from"
            )
