"""Latency measurement of clipsam pipelines (`clipsam bench` and the regression gate).

A backend name maps to a pipeline builder in ONE registry, `BACKENDS`. A stage runner times one pipeline
call per image; untimed preparation (the image embedding before a decoder run, the prompts) is cached per
image so warm-up and timed runs measure the stage alone. With a reference pipeline the runs are
interleaved, alternating which goes first, so machine drift hits both sides: on a shared machine the ratio
is the stable figure, and the regression gate compares ratios.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipsam.engine.demo_scene import DEMO_VOCABULARY, demo_scene
from clipsam.engine.dense_clip import DensePredictor
from clipsam.engine.errors import ClipsamError
from clipsam.engine.model_choice import ModelChoice
from clipsam.engine.pipeline import (
    Pipeline,
    SegmentOptions,
    default_dense_config,
    encode_segments,
    merge_any,
    vocabulary_from_words,
)
from clipsam.engine.prompts import extract_prompts
from clipsam.engine.types import DenseMap, MaskCandidates, Prompts, SegmentationResult

STAGES = ("dense", "encoder", "decoder", "kernels", "end-to-end")
PROMPT_CAP = 128  # real prompts: at most this many, the most confident first


@dataclass(frozen=True)
class PipelineSpec:
    """What a builder needs: `choice` (the weights) for torch, `artifacts` (an export folder) for the rest."""

    choice: ModelChoice | None = None
    artifacts: Path | None = None
    providers: str = "auto"


@dataclass(frozen=True)
class BackendEntry:
    build: Callable[[PipelineSpec], Pipeline]
    needs_artifacts: bool
    precision: str = "fp32"


def _torch_pipeline(spec: PipelineSpec) -> Pipeline:
    from clipsam.engine.backends.torch_reference import build_reference_pipeline

    return build_reference_pipeline(spec.choice)


def _artifact_builder(backend: str, decoder: str = "auto", precision: str = "exact", mechanism: str = "auto"):
    def build(spec: PipelineSpec) -> Pipeline:
        from clipsam.engine.artifacts import pipeline_from_artifacts

        return pipeline_from_artifacts(spec.artifacts, backend, spec.providers, decoder, precision, mechanism)

    return build


# onnxruntime: the fast (rewritten) decoder when exported; -faithful keeps sam2's decoder structure;
# -fast: `segment --precision fast` (mechanism from the CPU's flags, engine/fast_mode.py); -int8 / -bf16
# force one mechanism (-bf16 needs a CPU with native bf16), so both can be compared on one machine.
BACKENDS: dict[str, BackendEntry] = {
    "torch": BackendEntry(_torch_pipeline, needs_artifacts=False),
    "onnxruntime": BackendEntry(_artifact_builder("onnxruntime"), needs_artifacts=True),
    "onnxruntime-faithful": BackendEntry(_artifact_builder("onnxruntime", "faithful"), needs_artifacts=True),
    "onnxruntime-fast": BackendEntry(
        _artifact_builder("onnxruntime", precision="fast"), needs_artifacts=True, precision="fast"
    ),
    "onnxruntime-int8": BackendEntry(
        _artifact_builder("onnxruntime", precision="fast", mechanism="int8"),
        needs_artifacts=True,
        precision="int8 sam2_encoder, fp32 elsewhere",
    ),
    "onnxruntime-bf16": BackendEntry(
        _artifact_builder("onnxruntime", precision="fast", mechanism="bf16"),
        needs_artifacts=True,
        precision="bf16 sclip_tower + sam2_encoder, fp32 elsewhere",
    ),
    "openvino": BackendEntry(_artifact_builder("openvino"), needs_artifacts=True),
}


def backend_entry(name: str) -> BackendEntry:
    if name not in BACKENDS:
        raise ClipsamError(f"unknown backend '{name}'; choose one of: {', '.join(BACKENDS)}")
    return BACKENDS[name]


@dataclass(frozen=True)
class BenchConfig:
    """stage: one of STAGES. prompts: a fixed grid of this many prompts, or None for the dense map's own."""

    stage: str = "end-to-end"
    warmup: int = 1
    runs: int = 5
    prompts: int | None = None

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


def grid_prompts(count: int, height: int, width: int, num_classes: int) -> Prompts:
    """`count` one-point prompts at cell centres of a square grid over the image (image frame)."""
    side = int(np.ceil(np.sqrt(count)))
    ys, xs = np.meshgrid((np.arange(side) + 0.5) * height / side, (np.arange(side) + 0.5) * width / side)
    coords = np.stack([xs.ravel(), ys.ravel()], axis=1)[:count].astype(np.float32)  # [B, 2] (x, y)
    half = np.float32(max(4.0, min(height, width) / (2 * side)))
    return Prompts(
        coords=coords[:, None, :],
        labels=np.ones((count, 1), np.int32),
        class_ids=(np.arange(count) % num_classes).astype(np.int32),
        scores=np.linspace(0.9, 0.5, count, dtype=np.float32),
        boxes=np.concatenate([coords - half, coords + half], axis=1),
        areas=np.full(count, int((2 * half) ** 2), np.int64),
    )


class PromptSource:
    """The prompts every compared pipeline gets for an image: a fixed grid, or the dense map's own regions
    (min_confidence 0, at most PROMPT_CAP) from `pipeline`'s dense map, computed once per image."""

    def __init__(self, pipeline: Pipeline, vocabulary, count: int | None):
        self.pipeline, self.vocabulary, self.count = pipeline, vocabulary, count
        self._dense: dict[int, DenseMap] = {}

    def dense_map(self, index: int, image: np.ndarray) -> DenseMap:
        if index not in self._dense:
            self._dense[index] = self.pipeline.dense_map(image, self.vocabulary)
        return self._dense[index]

    def prompts(self, index: int, image: np.ndarray) -> Prompts:
        if self.count is not None:
            return grid_prompts(self.count, *image.shape[:2], self.vocabulary.num_classes)
        return real_prompts(self.dense_map(index, image), PROMPT_CAP)


def real_prompts(dense: DenseMap, cap: int) -> Prompts:
    return extract_prompts(dense, min_confidence=0.0, max_prompts=cap)


class StageRunner:
    """Times one stage of one pipeline: call(index, image) → (timings ms incl. "total", stage output)."""

    def __init__(self, pipeline: Pipeline, stage: str, source: PromptSource):
        self.pipeline, self.stage, self.source = pipeline, stage, source
        self.vocabulary = source.vocabulary
        self._embedded: int | None = None
        self._candidates: dict[int, MaskCandidates] = {}

    def __call__(self, index: int, image: np.ndarray) -> tuple[dict[str, float], object]:
        run = {
            "dense": self._dense,
            "encoder": self._encoder,
            "decoder": self._decoder,
            "kernels": self._kernels,
            "end-to-end": self._end_to_end,
        }[self.stage]
        timings, output = run(index, image)
        if "total" not in timings:
            timings["total"] = sum(v for k, v in timings.items() if not k.startswith("num_"))
        return timings, output

    def _dense(self, index, image):
        backend = self.pipeline.dense_backend
        text_features, text_ms = _timed(lambda: backend.encode_queries(self.vocabulary.queries))
        predictor = DensePredictor(
            backend.encode_crops,
            text_features,
            self.vocabulary,
            default_dense_config(self.vocabulary),
            patch_size=backend.patch_size,
        )
        dense, sclip_ms = _timed(lambda: predictor.predict(image))
        return {"text": text_ms, "sclip": sclip_ms}, dense

    def _encoder(self, index, image):
        _, encoder_ms = _timed(lambda: self.pipeline.mask_backend.set_image(image))
        self._embedded = index
        return {"sam2_encoder": encoder_ms}, None

    def _decoder(self, index, image):
        prompts = self.source.prompts(index, image)
        self._embed(index, image)
        candidates, decoder_ms = _timed(lambda: self._mask_candidates(prompts, image))
        return {"sam2_decoder": decoder_ms, "num_prompts": float(len(prompts))}, candidates

    def _kernels(self, index, image):
        dense = self.source.dense_map(index, image)
        if index not in self._candidates:
            self._embed(index, image)
            self._candidates[index] = self._mask_candidates(self.source.prompts(index, image), image)
        candidates = self._candidates[index]
        _, prompts_ms = _timed(lambda: real_prompts(dense, PROMPT_CAP))
        segments, merge_ms = _timed(lambda: self._merge(candidates))
        timings = {"prompts": prompts_ms, "merge": merge_ms, "num_prompts": float(len(candidates))}
        return timings, segments

    def _end_to_end(self, index, image):
        if self.source.count is not None:
            return self._end_to_end_fixed(index, image)
        options = SegmentOptions(min_confidence=0.0, max_prompts=PROMPT_CAP)
        result = self.pipeline.segment(image, self.vocabulary, options)
        return {**result.timings_ms, "num_prompts": float(result.counts["prompts"])}, result

    def _end_to_end_fixed(self, index, image):
        """Pipeline.segment's stages with the grid as the decoder batch (random weights give ~10 regions at
        480×640; the floors are quoted at 128 prompts). The prompt stage's own cost is still timed."""
        timings, dense = self._dense(index, image)
        _, timings["prompts"] = _timed(lambda: real_prompts(dense, PROMPT_CAP))
        prompts = self.source.prompts(index, image)
        _, timings["sam2_encoder"] = _timed(lambda: self.pipeline.mask_backend.set_image(image))
        self._embedded = index
        candidates, timings["sam2_decoder"] = _timed(lambda: self._mask_candidates(prompts, image))
        segments, timings["merge"] = _timed(lambda: self._merge(candidates))
        height, width = image.shape[:2]
        result = SegmentationResult(
            height,
            width,
            self.vocabulary.class_names,
            segments,
            self.pipeline.random_weights,
            self.pipeline.models,
            {**timings, "total": sum(timings.values())},
            {"prompts": len(prompts), "segments": len(segments)},
        )
        return {**timings, "num_prompts": float(len(prompts))}, result

    def _mask_candidates(self, prompts: Prompts, image: np.ndarray):
        """The mask stage as Pipeline.segment runs it (RLEs straight from exported graphs)."""
        return self.pipeline.mask_candidates(prompts, False, image.shape[:2])

    def _merge(self, candidates) -> tuple:
        return encode_segments(merge_any(candidates, SegmentOptions()), self.vocabulary.class_names)

    def _embed(self, index: int, image: np.ndarray) -> None:
        if self._embedded != index:
            self.pipeline.mask_backend.set_image(image)
            self._embedded = index


def _timed(call: Callable[[], object]) -> tuple[object, float]:
    start = time.perf_counter()
    value = call()
    return value, (time.perf_counter() - start) * 1000.0


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
