"""End to end (image → segments): the onnxruntime engine against the pure PyTorch reference, and the
CLIP-guided engine against SAM2's blind point grid.

480×640 street scene, SCLIP ViT-B/16 + SAM2.1 tiny, seeded random weights (cost does not depend on weight
values). Engine vs reference: a fixed grid of 128 prompts (random weights give only ~10 dense-map regions
here; the floor is quoted at 128), the prompt stage still timed on the dense map. Blind grid: the dense
map's real prompts (min confidence 0, at most 128), since the query count is the point. Stages are timed
by `clipsam.engine.bench.measure.StageRunner`, as `clipsam bench` does. The artifacts are exported once
per module into a temp folder (CLIPSAM_BENCH_ARTIFACTS=DIR reuses an export made with
`clipsam export --out DIR --random-weights`).

Run for real:  python -m pytest benchmarks/bench_end_to_end.py --benchmark-enable -q
  (+ CLIPSAM_BENCH_GRID=1 for SAM2's 32×32 grid, ≈110 s per call here; otherwise a 4×4 grid).
With the default `--benchmark-disable` each body runs once on 4 prompts as a correctness check (agreement
with the reference) and no speed floor is asserted.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import floors
import numpy as np
import pytest

from clipsam.engine.bench.demo_scene import demo_scene
from clipsam.engine.bench.measure import PromptSource, StageRunner, bench_vocabulary
from clipsam.engine.bench.record import library_versions, machine_info, segment_agreement
from clipsam.engine.pipeline import Pipeline

HEIGHT, WIDTH, PROMPTS = 480, 640, 128
MIN_AGREEMENT = 0.9  # mean per-segment mask IoU vs the reference; fp32 engines sit at ~1.0
GRID_SIDE = 32  # SAM2AutomaticMaskGenerator's default points_per_side


def _enabled(config: pytest.Config) -> bool:
    return not (config.getoption("benchmark_disable") and not config.getoption("benchmark_enable"))


@pytest.fixture(scope="module")
def artifacts(bench_artifacts: Path) -> Path:
    """The session's benchmark artifacts (benchmarks/conftest.py), shared with the encoder group."""
    return bench_artifacts


@pytest.fixture(scope="module")
def engine(artifacts: Path) -> Pipeline:
    from clipsam.engine.factory import load_pipeline

    return load_pipeline(artifacts, "onnxruntime")


@pytest.fixture(scope="module")
def fast_engine(artifacts: Path, request: pytest.FixtureRequest) -> Pipeline:
    """`--precision fast` (this CPU class's mechanism); the correctness run may use the tiny int8 copy."""
    from clipsam.engine.factory import load_pipeline
    from clipsam.engine.manifest import INT8_COPIES, read_manifest

    if not read_manifest(artifacts, check_files=False).has_graphs(INT8_COPIES):
        if _enabled(request.config):
            pytest.fail(f"{artifacts} has no int8 graphs: export it with `clipsam export --int8`")
        artifacts = request.getfixturevalue("tiny_int8_artifacts")
    return load_pipeline(artifacts, "onnxruntime", precision="fast")


@pytest.fixture(scope="module")
def reference(engine: Pipeline, artifacts: Path, request: pytest.FixtureRequest) -> Pipeline:
    from clipsam.engine.bench.measure import reference_choice
    from clipsam.engine.factory import load_reference_pipeline
    from clipsam.engine.manifest import read_manifest

    models = read_manifest(artifacts, check_files=False).data["models"]
    clip_file = (
        None if models["sclip"].get("seed") is not None else request.getfixturevalue("tiny_clip_checkpoint")
    )
    pipeline = load_reference_pipeline(reference_choice(models, clip_file, None))
    for model in ("clip", "sam2"):
        assert pipeline.models[model]["weights"] == engine.models[model]["weights"], (
            "same weights or no ratio"
        )
    return pipeline


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return demo_scene(HEIGHT, WIDTH)


def _runners(benchmark, engine: Pipeline, reference: Pipeline, prompts: int | None) -> tuple:
    """End-to-end runners of engine and reference fed the same prompts (None: the dense map's own)."""
    source = PromptSource(engine, bench_vocabulary(), prompts)
    return StageRunner(engine, "end-to-end", source), StageRunner(reference, "end-to-end", source)


def _prompt_count(benchmark) -> int:
    return 4 if benchmark.disabled else PROMPTS


def _run(benchmark, fn):
    rounds = 1 if benchmark.disabled else 3
    return benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=0 if benchmark.disabled else 1)


def _median_seconds(call, rounds: int) -> tuple[float, object]:
    """Median wall time of `rounds` calls and the last call's value."""
    samples, value = [], None
    for _ in range(rounds):
        start = time.perf_counter()
        value = call()
        samples.append(time.perf_counter() - start)
    return float(np.median(samples)), value


def _context() -> dict:
    machine = machine_info()
    return {"machine": f"{machine['cpu_model']}, {machine['usable_cores']} cores", **library_versions()}


def _versus_reference(benchmark, ours_pipeline, reference, image, floor: float, min_agreement=MIN_AGREEMENT):
    """Time `ours_pipeline` (the benchmarked body) and the reference (by hand, right after), same prompts;
    agreement and the ratio go to extra_info; the floor is asserted only in an enabled run, the agreement
    only when `min_agreement` is given."""
    ours_runner, theirs_runner = _runners(benchmark, ours_pipeline, reference, _prompt_count(benchmark))
    _, ours = _run(benchmark, lambda: ours_runner(0, image))
    rounds = 1 if benchmark.disabled else 3
    theirs_s, (_, theirs) = _median_seconds(lambda: theirs_runner(0, image), rounds)
    agreement = segment_agreement(ours, theirs)
    benchmark.extra_info.update({"prompts": ours.counts["prompts"], "agreement": agreement, **_context()})
    benchmark.extra_info["precision"] = ours_pipeline.models.get("precision", "fp32")
    assert ours.counts["prompts"] == _prompt_count(benchmark)
    assert min_agreement is None or agreement["mean_iou"] >= min_agreement, agreement
    if benchmark.disabled:
        return
    ours_s = float(benchmark.stats.stats.median)
    ratio = theirs_s / ours_s
    benchmark.extra_info.update(
        {"ratio": ratio, "floor": floor, "ours_median_s": ours_s, "reference_median_s": theirs_s}
    )
    assert ratio >= floor, f"end to end ×{ratio:.2f} over the reference, floor ×{floor}"


@pytest.mark.benchmark(group="end-to-end")
def test_end_to_end_onnxruntime_vs_reference(benchmark, engine, reference, image):
    _versus_reference(benchmark, engine, reference, image, floors.floor("end_to_end_128", "exact"))


@pytest.mark.benchmark(group="end-to-end")
def test_end_to_end_fast_precision_vs_reference(benchmark, fast_engine, reference, image):
    """Fast mode (the CPU class's mechanism), with that class's floor (benchmarks/floors.py). Agreement is
    recorded, not asserted: per output segment it is below the fp32 engines' (random-weight masks cover
    most of the image, so segments are overlap slivers); tests/test_fast_mode.py holds every prompt's mask
    to IoU ≥ 0.99."""
    required = floors.floor("end_to_end_128", "fast")
    _versus_reference(benchmark, fast_engine, reference, image, required, min_agreement=None)


@pytest.mark.benchmark(group="end-to-end")
def test_end_to_end_reference(benchmark, engine, reference, image):
    """The denominator alone, for pytest-benchmark's own comparison across saved runs."""
    _, theirs_runner = _runners(benchmark, engine, reference, _prompt_count(benchmark))
    timings, _ = _run(benchmark, lambda: theirs_runner(0, image))
    assert timings["num_prompts"] == _prompt_count(benchmark)


def _grid_side(benchmark) -> int:
    wants_full = not benchmark.disabled and os.environ.get("CLIPSAM_BENCH_GRID") == "1"
    return GRID_SIDE if wants_full else 4


@pytest.mark.benchmark(group="blind-grid")
def test_blind_grid_vs_clip_guided(benchmark, reference, engine, image):
    """SAM2AutomaticMaskGenerator (points_per_side² queries) on the same image and SAM2 model, against
    the CLIP-guided pipelines' prompt count and time (torch reference and onnxruntime engine)."""
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    side = _grid_side(benchmark)
    generator = SAM2AutomaticMaskGenerator(reference.mask_stage.model.module, points_per_side=side)
    grid_seconds = []

    def generate() -> list[dict]:
        start = time.perf_counter()
        masks = generator.generate(image)
        grid_seconds.append(time.perf_counter() - start)
        return masks

    grid_masks = _run(benchmark, generate)
    grid_s = float(np.median(grid_seconds[1:] if len(grid_seconds) > 1 else grid_seconds))  # no warm-up
    assert all(m["segmentation"].shape == (HEIGHT, WIDTH) for m in grid_masks)
    source = PromptSource(engine, bench_vocabulary(), None)
    guided_queries = len(source.prompts(0, image))  # the dense map's own regions, as `segment` prompts
    assert guided_queries >= 1
    figures = {
        "grid_side": side,
        "grid_queries": side * side,
        "grid_masks": len(grid_masks),
        "grid_median_s": grid_s,
        "guided_queries": guided_queries,
        "query_ratio": side * side / guided_queries,
    }
    if not benchmark.disabled:  # the correctness run skips the two guided pipelines' timing
        guided_s, _ = _median_seconds(lambda: StageRunner(reference, "end-to-end", source)(0, image), 1)
        engine_s, _ = _median_seconds(lambda: StageRunner(engine, "end-to-end", source)(0, image), 1)
        figures.update(
            {
                "guided_median_s": guided_s,
                "engine_median_s": engine_s,
                "time_ratio_vs_torch_guided": grid_s / guided_s,
                "time_ratio_vs_engine": grid_s / engine_s,
            }
        )
    benchmark.extra_info.update({**figures, **_context()})
