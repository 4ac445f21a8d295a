"""`clipsam bench`: the measurement core on fake stages, ratio maths, the JSON record, one-line CLI errors,
and two real runs (torch decoder, gated against a baseline no run can regress from; onnxruntime vs the torch
reference). The gate on fixed records: tests/test_bench_gate.py."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from clipsam.engine.bench import measure as bench
from clipsam.engine.bench import record as bench_record
from clipsam.engine.dense_clip import SclipStage
from clipsam.engine.errors import ClipsamError
from clipsam.engine.pipeline import Pipeline
from clipsam.engine.types import ImageEmbedding, MaskCandidates, RleCandidates
from clipsam.kernels import rle as rle_codec
from tests.cli_helpers import assert_one_line_error, run_cli

FEATURE_DIM = 8


@pytest.fixture(scope="module", autouse=True)
def _bench_registered():
    """`bench` on the app (the lead wires commands_bench.register into cli/app.py; idempotent here)."""
    from clipsam.cli import app as app_module
    from clipsam.cli import commands_bench

    names = {getattr(c.callback, "__name__", None) for c in app_module.app.registered_commands}
    if "bench" not in names:
        commands_bench.register(app_module.app)


class FakeCrops:
    """CropEncoder with random unit features: exercises the real dense-map code in milliseconds."""

    patch_size = 16
    weights_id = "w1"

    def encode_crops(self, crops: np.ndarray) -> np.ndarray:
        tokens = (crops.shape[2] // 16) * (crops.shape[3] // 16)
        features = np.random.default_rng(0).normal(size=(crops.shape[0], tokens, FEATURE_DIM))
        return (features / np.linalg.norm(features, axis=-1, keepdims=True)).astype(np.float32)

    def encode_crops_with_regions(self, crops: np.ndarray, patch_regions: np.ndarray) -> np.ndarray:
        assert patch_regions.shape == (crops.shape[0], (crops.shape[2] // 16) * (crops.shape[3] // 16))
        return self.encode_crops(crops)


class FakeTexts:
    """TextEncoder with random unit features."""

    weights_id = "w1"

    def encode(self, queries) -> np.ndarray:
        features = np.random.default_rng(1).normal(size=(len(queries), FEATURE_DIM))
        return (features / np.linalg.norm(features, axis=-1, keepdims=True)).astype(np.float32)


class FakeMasks:
    """MaskStage: a 32×32 square around each prompt point; counts embed calls."""

    model_id = "fake-sam:w2"

    def __init__(self):
        self.embeddings = 0

    def embed(self, image: np.ndarray) -> ImageEmbedding:
        self.embeddings += 1
        return ImageEmbedding(arrays={}, image_hw=image.shape[:2], model=self.model_id)

    def decode_masks(self, embedding: ImageEmbedding, prompts, use_boxes: bool = False) -> MaskCandidates:
        masks = np.zeros((len(prompts), *embedding.image_hw), bool)
        for i, (x, y) in enumerate(prompts.coords[:, 0].astype(int)):
            masks[i, max(0, y - 16) : y + 16, max(0, x - 16) : x + 16] = True
        iou = np.full(len(prompts), 0.9, np.float32)
        return MaskCandidates(masks, iou, prompts.class_ids.astype(np.int32), prompts.scores * iou)

    def decode(self, embedding: ImageEmbedding, prompts, use_boxes: bool = False) -> RleCandidates:
        candidates = self.decode_masks(embedding, prompts, use_boxes)
        rles = rle_codec.encode_batch(candidates.masks) if len(candidates) else []
        return RleCandidates(rles, candidates.iou, candidates.class_ids, candidates.scores)


def fake_pipeline(masks: FakeMasks | None = None) -> Pipeline:
    models = {"clip": {"name": "fake-clip", "weights": "w1"}, "sam2": {"name": "fake-sam", "weights": "w2"}}
    dense = SclipStage(FakeCrops(), FakeTexts())
    return Pipeline(dense, masks or FakeMasks(), models={**models, "backend": "torch"}, random_weights=True)


def fake_record(ours_ms: dict, reference_ms: dict | None, runs: int = 3) -> dict:
    """A record from constant per-stage timings (ms); reference_ms None = no --compare-to."""
    sides = {"ours": ours_ms} if reference_ms is None else {"ours": ours_ms, "reference": reference_ms}
    samples = {name: [_with_total(ms) for _ in range(runs)] for name, ms in sides.items()}
    pipelines = {name: bench_record.describe_pipeline("torch", fake_pipeline()) for name in samples}
    measurement = bench.Measurement(samples, {name: None for name in samples})
    return bench_record.build_record(bench.BenchConfig(runs=runs), "test", pipelines, measurement)


def _with_total(stages_ms: dict) -> dict:
    stages = {k: v for k, v in stages_ms.items() if k != "total"}
    return {**stages, "total": stages_ms.get("total", sum(stages.values()))}


def test_measure_interleaves_skips_warmup_and_cycles_images():
    calls = []

    def runner(name):
        def run(index, image):
            calls.append((name, index))
            return {"stage": float(len(calls)), "total": float(len(calls))}, (name, index)

        return run

    images = [np.zeros((2, 2, 3), np.uint8)] * 2
    progress = []
    result = bench.measure(
        {"ours": runner("ours"), "reference": runner("reference")},
        images,
        bench.BenchConfig(warmup=1, runs=3),
        lambda done, total: progress.append((done, total)),
    )
    # Step 0 is warm-up; the side that goes first alternates; images are used in turn.
    assert calls == [
        ("ours", 0), ("reference", 0), ("reference", 1), ("ours", 1),
        ("ours", 0), ("reference", 0), ("reference", 1), ("ours", 1),
    ]  # fmt: skip
    assert [s["stage"] for s in result.samples["ours"]] == [4.0, 5.0, 8.0]
    assert [s["stage"] for s in result.samples["reference"]] == [3.0, 6.0, 7.0]
    assert result.outputs == {"ours": ("ours", 1), "reference": ("reference", 1)}
    assert progress[-1] == (8, 8)


def test_stats_throughput_and_speedup_maths():
    samples = [{"sclip": float(v), "num_prompts": 10.0, "total": float(2 * v)} for v in range(1, 101)]
    stats = bench_record.stage_stats(samples)
    assert list(stats) == ["sclip", "total"]
    assert stats["sclip"]["p50"] == pytest.approx(50.5)
    assert stats["sclip"]["p90"] == pytest.approx(90.1)
    assert stats["sclip"]["p99"] == pytest.approx(99.01)
    rates = bench_record.throughput(samples)
    seconds = sum(2 * v for v in range(1, 101)) / 1000
    assert rates["images_per_s"] == pytest.approx(100 / seconds)
    assert rates["prompts_per_s"] == pytest.approx(1000 / seconds)
    ours = {"a": {"p50": 10.0}, "b": {"p50": 4.0}, "only_ours": {"p50": 1.0}}
    reference = {"a": {"p50": 30.0}, "b": {"p50": 2.0}}
    assert bench_record.speedups(ours, reference) == {"a": 3.0, "b": 0.5}


@pytest.mark.parametrize("stage", bench.STAGES)
def test_stage_runners_on_fake_backends(stage):
    masks = FakeMasks()
    pipeline = fake_pipeline(masks)
    source = bench.PromptSource(pipeline, bench.bench_vocabulary(), count=None if stage == "kernels" else 6)
    runner = bench.StageRunner(pipeline, stage, source)
    image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    result = bench.measure({"ours": runner}, [image], bench.BenchConfig(stage, warmup=1, runs=2))
    expected = {
        "dense": {"text", "sclip"},
        "encoder": {"sam2_encoder"},
        "decoder": {"sam2_decoder", "num_prompts"},
        "kernels": {"prompts", "merge", "num_prompts"},
        "end-to-end": {"text", "sclip", "prompts", "sam2_encoder", "sam2_decoder", "merge", "num_prompts"},
        "regions": {
            *("text", "sam2_encoder", "regions_decode", "sclip", "regions_vote"),
            *("prompts", "sam2_decoder", "merge", "num_prompts"),
        },
    }[stage]
    for timings in result.samples["ours"]:
        assert expected | {"total"} == set(timings)
        stage_sum = sum(v for k, v in timings.items() if k not in ("total", "num_prompts"))
        assert timings["total"] == pytest.approx(stage_sum)
    if stage == "decoder":
        assert result.samples["ours"][0]["num_prompts"] == 6
        assert masks.embeddings == 1  # the embedding is prepared once, untimed


def test_end_to_end_runner_is_pipeline_segment():
    """Without --prompts the end-to-end stage IS Pipeline.segment under the bench options; with a grid it
    times the same stages and returns the same kind of result, the grid as the decoder batch."""
    pipeline, vocabulary = fake_pipeline(), bench.bench_vocabulary()
    image = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    own = bench.StageRunner(pipeline, "end-to-end", bench.PromptSource(pipeline, vocabulary, None))
    timings, result = own(0, image)
    expected = pipeline.segment(image, vocabulary, bench.BENCH_OPTIONS)
    assert expected.counts["prompts"] > 0 and expected.segments
    assert result.segments == expected.segments and result.counts == expected.counts
    assert set(timings) == set(expected.timings_ms) | {"num_prompts"}
    assert timings["num_prompts"] == expected.counts["prompts"]
    grid = bench.StageRunner(pipeline, "end-to-end", bench.PromptSource(pipeline, vocabulary, 6))
    grid_timings, grid_result = grid(0, image)
    assert set(grid_timings) == set(timings) and grid_timings["num_prompts"] == 6
    assert grid_result.counts["prompts"] == 6 and set(grid_result.counts) == set(expected.counts)
    assert grid_result.timings_ms["total"] == pytest.approx(grid_timings["total"])


def test_bench_names_come_from_the_registry():
    from clipsam.engine.backends import pipeline_names

    assert {"torch", "onnxruntime", "onnxruntime-faithful", "onnxruntime-bf16"} <= set(pipeline_names())
    assert bench.needs_artifacts("onnxruntime-int8") and not bench.needs_artifacts("torch")
    with pytest.raises(ClipsamError, match="unknown backend 'nope'; choose one of: .*onnxruntime-bf16"):
        bench.needs_artifacts("nope")


def test_grid_prompts_lie_inside_the_image():
    vocabulary = bench.bench_vocabulary()
    source = bench.PromptSource(fake_pipeline(), vocabulary, count=7)
    prompts = source.prompts(0, np.zeros((96, 128, 3), np.uint8))  # a landscape image: height 96, width 128
    assert len(prompts) == 7 and prompts.coords.shape == (7, 1, 2)
    assert (prompts.coords[..., 0] < 128).all() and (prompts.coords[..., 1] < 96).all()
    assert set(prompts.class_ids.tolist()) == set(range(vocabulary.num_classes))


def test_parsers():
    assert bench.parse_size("480x640") == (480, 640)
    assert bench.parse_size("96×128") == (96, 128)
    assert bench_record.parse_fraction("10%") == pytest.approx(0.1)
    assert bench_record.parse_fraction("0.25") == pytest.approx(0.25)
    for bad in ("480", "0x640", "ax640", "480x640x3"):
        with pytest.raises(ClipsamError, match="--size"):
            bench.parse_size(bad)
    for bad in ("ten", "0%", "150%", "-5%"):
        with pytest.raises(ClipsamError, match="--max-regression"):
            bench_record.parse_fraction(bad)


def test_record_schema_and_round_trip(tmp_path):
    record = fake_record({"sclip": 10.0, "sam2_decoder": 20.0, "total": 30.0}, {"sclip": 30.0, "total": 50.0})
    for key in ("schema", "schema_version", "config", "machine", "versions", "memory", "ours", "reference"):
        assert key in record
    assert record["speedup"] == pytest.approx({"sclip": 3.0, "total": 50 / 30})
    assert record["memory"]["peak_rss_mb"] > 10
    assert record["machine"]["usable_cores"] >= 1 and record["machine"]["cpu_model"]
    assert record["versions"]["numpy"] == np.__version__
    path = tmp_path / "run.json"
    bench_record.write_record(path, record)
    assert bench_record.read_record(path) == json.loads(json.dumps(record))


def test_read_record_rejects_unreadable_files(tmp_path):
    garbage, other = tmp_path / "garbage.json", tmp_path / "other.json"
    garbage.write_text("{not json")
    other.write_text(json.dumps({"schema": "something-else"}))
    for path, message in (
        (tmp_path / "missing.json", "cannot read"),
        (garbage, "cannot read"),
        (other, "not a"),
    ):
        with pytest.raises(ClipsamError, match=message):
            bench_record.read_record(path)


def test_segment_agreement_is_one_for_identical_results_and_lower_when_masks_move():
    pipeline = fake_pipeline()
    image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    options = bench.SegmentOptions(min_confidence=0.0, min_region_size=1)
    vocabulary = bench.bench_vocabulary()
    result = pipeline.segment(image, vocabulary, options)
    assert result.segments
    same = bench_record.agreement(result, result)
    assert same["mean_iou"] == 1.0 and same["min_iou"] == 1.0
    fewer = replace(result, segments=result.segments[:1])
    assert bench_record.agreement(fewer, result)["min_iou"] < 1.0 or len(result.segments) == 1


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib is an optional dependency of --plot")
    from clipsam.engine.bench.plot import plot_stages

    record = fake_record({"sclip": 10.0, "sam2_decoder": 20.0}, {"sclip": 30.0, "sam2_decoder": 90.0})
    path = plot_stages(record, tmp_path / "stages.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--stage", "nope"], "unknown stage"),
        (["--backend", "nope"], "unknown backend"),
        (["--compare-to", "nope"], "unknown backend"),
        (["--sam-model", "sam9-giant"], "unknown model"),
        (["--backend", "torch", "--artifacts", "/nonexistent"], "--artifacts"),
        (["--size", "480by640"], "--size"),
        (["--max-regression", "lots"], "--max-regression"),
        (["--baseline", "/nonexistent/base.json"], "cannot read baseline"),
        (["--images", "/nonexistent/folder"], "--images"),
        (["--json", "/nonexistent/dir/out.json"], "does not exist"),
    ],
)
def test_cli_errors_are_one_line(args, fragment, capsys):
    code, _, err = run_cli(["bench", "--random-weights", *args], capsys)
    assert_one_line_error(code, err, fragment)


def test_cli_artifacts_with_checkpoint_clip_need_the_file(artifacts, capsys):
    code, _, err = run_cli(["bench", "--artifacts", artifacts, "--compare-to", "torch"], capsys)
    assert_one_line_error(code, err, "--clip-checkpoint")


def test_cli_torch_decoder_run(capsys, tmp_path):
    out = tmp_path / "decoder.json"
    args = ["bench", "--stage", "decoder", "--random-weights", "--runs", "1", "--warmup", "0"]
    args += ["--prompts", "4", "--size", "96x128", "--backend", "torch"]
    code, stdout, err = run_cli([*args, "--json", out], capsys)
    assert code == 0, err
    assert "sam2_decoder" in stdout and "RANDOM WEIGHTS" in stdout
    record = bench_record.read_record(out)
    assert record["ours"]["num_prompts"] == 4 and record["ours"]["backend"] == "torch"
    assert record["ours"]["stages"]["sam2_decoder"]["p50"] > 0 and record["reference"] is None
    # Gate a real rerun against a baseline doctored to 1000 s per stage: every stage is gated (the baseline is
    # above MIN_GATED_MS) and none can regress, whatever this machine's speed.
    for stats in record["ours"]["stages"].values():
        stats["p50"] = 1e6
    baseline = tmp_path / "baseline.json"
    bench_record.write_record(baseline, record)
    code, stdout, err = run_cli([*args, "--baseline", baseline], capsys)
    assert code == 0, err
    assert "baseline check" in stdout and "REGRESSED" not in stdout and "not gated" not in stdout


def test_cli_onnxruntime_vs_torch_reference(artifacts, tiny_clip_checkpoint, capsys, tmp_path):
    out = tmp_path / "e2e.json"
    args = [
        "bench",
        "--artifacts",
        artifacts,
        "--compare-to",
        "torch",
        "--clip-checkpoint",
        tiny_clip_checkpoint,
    ]
    args += ["--runs", "1", "--warmup", "0", "--prompts", "4", "--size", "96x128", "--json", out]
    code, stdout, err = run_cli(args, capsys)
    assert code == 0, err
    assert "speedup" in stdout
    record = bench_record.read_record(out)
    assert record["ours"]["backend"] == "onnxruntime" and record["reference"]["backend"] == "torch"
    assert set(record["speedup"]) >= {"sclip", "sam2_encoder", "sam2_decoder", "total"}
    assert record["ours"]["models"]["sam2"]["weights"] == record["reference"]["models"]["sam2"]["weights"]
    assert record["agreement"]["kind"] == "per-segment mask IoU"
    assert record["agreement"]["mean_iou"] > 0.9, record["agreement"]


def test_bench_images_reads_a_folder_in_name_order(tmp_path):
    from PIL import Image

    for name, size in (("b.png", (20, 30)), ("a.jpg", (10, 12)), ("notes.txt", None)):
        if size is None:
            (tmp_path / name).write_text("not an image")
        else:
            Image.new("RGB", size[::-1], (10, 20, 30)).save(tmp_path / name)
    images, text = bench.bench_images(tmp_path, (480, 640))
    assert [im.shape for im in images] == [(10, 12, 3), (20, 30, 3)] and "2 images" in text
    generated, _ = bench.bench_images(None, (48, 64))
    assert generated[0].shape == (48, 64, 3) and generated[0].dtype == np.uint8
    (tmp_path / "empty").mkdir()
    with pytest.raises(ClipsamError, match="no .png"):
        bench.bench_images(tmp_path / "empty", (48, 64))


def test_reference_choice_follows_the_manifest(tmp_path):
    random_models = {
        "sclip": {"weights": "random-init, seed 3", "seed": 3},
        "sam2": {"name": "sam2.1-hiera-small", "weights": "random-init, seed 3", "seed": 3},
    }
    choice = bench.reference_choice(random_models, None, None)
    assert (choice.clip_random, choice.sam_random, choice.seed) == (True, True, 3)
    assert choice.sam_model == "sam2.1-hiera-small"
    real_clip = {**random_models, "sclip": {"weights": "sha256:abc", "seed": None}}
    with pytest.raises(ClipsamError, match="--clip-checkpoint"):
        bench.reference_choice(real_clip, None, None)
    choice = bench.reference_choice(real_clip, tmp_path / "clip.pt", None)
    assert choice.clip_checkpoint == tmp_path / "clip.pt" and not choice.clip_random and choice.sam_random
    two_seeds = {**random_models, "sam2": {**random_models["sam2"], "seed": 4}}
    with pytest.raises(ClipsamError, match="one seed"):
        bench.reference_choice(two_seeds, None, None)
