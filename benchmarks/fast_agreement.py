"""Agreement of `--precision fast` with exact fp32 on full-size artifacts, per mechanism, plus stage times.

    python benchmarks/fast_agreement.py ARTIFACTS [--mechanism auto|int8-static|bf16|int8] [--size 480x640]
        [--rounds 3]

For the demo street scene and vocabulary: dense-map argmax agreement (share of pixels with the same class),
whether the dense map's prompts are the same, per-prompt mask IoU (best-of-3 mask at image size) on the
exact pipeline's own prompts and on a 128-point grid, and median stage times (SCLIP dense map, SAM2 encoder)
of both pipelines, interleaved. Issue 17's bar: IoU ≥ 0.99 per prompt, ≥ 99 % argmax agreement.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

import numpy as np

from clipsam.engine.bench.demo_scene import demo_scene
from clipsam.engine.bench.measure import bench_vocabulary, parse_size, real_prompts
from clipsam.engine.factory import load_pipeline
from clipsam.engine.pipeline import StageTimer
from clipsam.engine.prompts import grid_prompts

GRID_PROMPTS = 128


def mask_ious(ours: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """bool [B, H, W] twice → float [B] IoU per prompt (1 where both masks are empty)."""
    intersection = (ours & expected).sum(axis=(1, 2))
    union = (ours | expected).sum(axis=(1, 2))
    return np.where(union > 0, intersection / np.maximum(union, 1), 1.0)


def stage_times(pipelines: dict, image: np.ndarray, vocabulary, rounds: int) -> dict:
    """Median ms of the dense map and the SAM2 encoder per pipeline, rounds interleaved."""
    samples = {name: {"sclip": [], "sam2_encoder": []} for name in pipelines}
    for round_index in range(rounds + 1):  # round 0 warms up
        names = list(pipelines) if round_index % 2 == 0 else list(pipelines)[::-1]
        for name in names:
            timer = StageTimer()
            with timer.stage("sclip"):
                pipelines[name].dense(image, vocabulary)
            with timer.stage("sam2_encoder"):
                pipelines[name].embed(image)
            if round_index:
                for stage, values in samples[name].items():
                    values.append(timer.values[stage])
    return {name: {k: statistics.median(v) for k, v in s.items()} for name, s in samples.items()}


def agreement(pipelines: dict, image: np.ndarray, vocabulary) -> dict:
    exact, fast = pipelines["exact"], pipelines["fast"]
    dense = {name: p.dense(image, vocabulary) for name, p in pipelines.items()}
    argmax = {name: d.probs.argmax(axis=0) for name, d in dense.items()}
    prompts = {name: real_prompts(pipelines[name], d, vocabulary) for name, d in dense.items()}
    same_count = len(prompts["exact"]) == len(prompts["fast"])
    shift = np.abs(prompts["exact"].coords - prompts["fast"].coords).max() if same_count else np.inf
    record = {
        "prompt_shift_max_px": float(shift),
        "dense_argmax_agreement": float((argmax["exact"] == argmax["fast"]).mean()),
        "dense_probs_max_abs": float(np.abs(dense["exact"].probs - dense["fast"].probs).max()),
        "same_prompt_classes": same_count
        and bool(np.array_equal(prompts["exact"].class_ids, prompts["fast"].class_ids)),
        "prompts_exact": len(prompts["exact"]),
        "prompts_fast": len(prompts["fast"]),
    }
    grid = grid_prompts(*image.shape[:2], GRID_PROMPTS, vocabulary.num_classes)
    embeddings = {name: pipeline.embed(image) for name, pipeline in (("exact", exact), ("fast", fast))}
    for label, batch in (("own_prompts", prompts["exact"]), ("grid128", grid)):
        masks = {
            name: pipeline.decode_masks(embeddings[name], batch).masks
            for name, pipeline in (("exact", exact), ("fast", fast))
        }
        ious = mask_ious(masks["fast"], masks["exact"])
        record[f"mask_iou_min_{label}"] = float(ious.min())
        record[f"mask_iou_mean_{label}"] = float(ious.mean())
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifacts")
    parser.add_argument("--mechanism", default="auto")
    parser.add_argument("--size", default="480x640")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    image, vocabulary = demo_scene(*parse_size(args.size)), bench_vocabulary()
    pipelines = {
        "exact": load_pipeline(args.artifacts, "onnxruntime"),
        "fast": load_pipeline(args.artifacts, "onnxruntime", precision="fast", fast_mechanism=args.mechanism),
    }
    record = {"fast": pipelines["fast"].models["precision"], "load_before": os.getloadavg()[0]}
    record.update(agreement(pipelines, image, vocabulary))
    times = stage_times(pipelines, image, vocabulary, args.rounds)
    record["median_ms"] = times
    record["speedup"] = {k: times["exact"][k] / times["fast"][k] for k in times["exact"]}
    record["load_after"] = os.getloadavg()[0]
    print(json.dumps(record, indent=1))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(record, handle, indent=1)


if __name__ == "__main__":
    main()
