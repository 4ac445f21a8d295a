"""The two encoder stages (SCLIP dense map, SAM2 image encoder) of the artifact engine against the PyTorch
reference, exact and `--precision fast` (the mechanism this CPU's class selects, engine/precision.py).

480×640 street scene, SCLIP ViT-B/16 + SAM2.1 tiny, seeded random weights. The reference's stage runs
untimed-by-pytest-benchmark right before each of ours (pedantic `setup`), so load drift hits both sides;
the ratio of medians goes to extra_info with the agreement (dense-map argmax agreement; per-prompt mask IoU
on 4 grid prompts for the encoder) and the floor of this machine's capability class (benchmarks/floors.py).

Run for real:  python -m pytest benchmarks/bench_encoders.py --benchmark-enable -q
With the default `--benchmark-disable` each body runs once on the session's tiny-CLIP export as a
correctness check and no floor is asserted.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from floors import floor
from harness import benchmarks_enabled

from clipsam.engine.bench.demo_scene import demo_scene
from clipsam.engine.bench.measure import PromptSource, StageRunner, bench_vocabulary
from clipsam.engine.bench.record import library_versions, machine_info
from clipsam.engine.pipeline import Pipeline
from clipsam.engine.prompts import grid_prompts

HEIGHT, WIDTH = 480, 640
ROUNDS = 3
MIN_ARGMAX_AGREEMENT = 0.99
MIN_MASK_IOU = 0.99
STAGES = {"sclip": "dense", "sam2_encoder": "encoder"}  # timing key → StageRunner stage


@pytest.fixture(scope="module", params=["exact", "fast"])
def engine(request: pytest.FixtureRequest, bench_artifacts: Path) -> Pipeline:
    from clipsam.engine.factory import load_pipeline
    from clipsam.engine.manifest import INT8_COPIES, read_manifest

    artifacts = bench_artifacts
    if request.param == "fast" and not read_manifest(artifacts, check_files=False).has_graphs(INT8_COPIES):
        if benchmarks_enabled(request.config):
            pytest.fail(f"{artifacts} has no int8 graphs: export it with `clipsam export --int8`")
        artifacts = request.getfixturevalue("tiny_int8_artifacts")
    return load_pipeline(artifacts, "onnxruntime", precision=request.param)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return demo_scene(HEIGHT, WIDTH)


def _stage_agreement(stage: str, ours: Pipeline, theirs: Pipeline, image: np.ndarray) -> dict:
    vocabulary = bench_vocabulary()
    if stage == "sclip":
        mine, reference = (p.dense(image, vocabulary).probs.argmax(0) for p in (ours, theirs))
        return {"dense_argmax_agreement": float((mine == reference).mean())}
    prompts = grid_prompts(HEIGHT, WIDTH, 4, vocabulary.num_classes)
    masks = [pipeline.decode_masks(pipeline.embed(image), prompts).masks for pipeline in (ours, theirs)]
    union = (masks[0] | masks[1]).sum(axis=(1, 2))
    ious = np.where(union > 0, (masks[0] & masks[1]).sum(axis=(1, 2)) / np.maximum(union, 1), 1.0)
    return {"mask_iou_min": float(ious.min())}


@pytest.mark.benchmark(group="encoders")
@pytest.mark.parametrize("stage", list(STAGES))
def test_encoder_stage_vs_reference(benchmark, engine, bench_reference, image, stage):
    source = PromptSource(engine, bench_vocabulary(), 4)
    ours = StageRunner(engine, STAGES[stage], source)
    theirs = StageRunner(bench_reference, STAGES[stage], source)
    ours_ms: list[float] = []
    reference_ms: list[float] = []

    def run_reference() -> None:
        reference_ms.append(theirs(0, image)[0][stage])

    def run_ours() -> None:
        ours_ms.append(ours(0, image)[0][stage])

    benchmark.pedantic(
        run_ours,
        setup=None if benchmark.disabled else run_reference,
        rounds=1 if benchmark.disabled else ROUNDS,
        iterations=1,
        warmup_rounds=0 if benchmark.disabled else 1,
    )
    agreement = _stage_agreement(stage, engine, bench_reference, image)
    precision = "exact" if engine.models["fast_mechanism"] == "fp32" else "fast"
    machine = machine_info()
    benchmark.extra_info.update(
        {
            "stage": stage,
            "precision": engine.models["precision"],
            "cpu_class": machine["capability_class"],
            "agreement": agreement,
            "machine": f"{machine['cpu_model']}, {machine['usable_cores']} cores",
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            **library_versions(),
        }
    )
    if stage == "sclip":
        assert agreement["dense_argmax_agreement"] >= MIN_ARGMAX_AGREEMENT, agreement
    else:
        assert agreement["mask_iou_min"] >= MIN_MASK_IOU, agreement
    if benchmark.disabled:
        return
    # warm-up rounds run `setup` too: keep the timed ones (the last ROUNDS of each)
    ratio = float(np.median(reference_ms[-ROUNDS:]) / np.median(ours_ms[-ROUNDS:]))
    required = floor(stage, precision)
    benchmark.extra_info.update(ratio_vs_reference=ratio, floor=required)
    assert ratio >= required, f"{stage} {precision}: ×{ratio:.2f} vs the reference, floor ×{required:.2f}"
