"""The options of `clipsam eval`, including the original project's `run_benchmarks.py` flags, and how they
map onto the SCLIP protocol's settings."""

from __future__ import annotations

import enum
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from clipsam.engine.backends import artifact_backends, backend_names, reference_backends
from clipsam.engine.errors import ClipsamError

DATA, MODEL, OUTPUT, SAM2 = "Dataset", "Model and protocol", "Output", "SAM2 modes"
RUNTIME = "Models and runtime"
CLIP_MODEL_NAMES = ("ViT-B/16", "ViT-B-16", "sclip-vit-b16")  # the one CLIP backbone SCLIP uses


class EvalMode(enum.StrEnum):
    dense = "dense"
    prompted_sam = "prompted-sam"
    sam_vote = "sam-vote"
    regions = "regions"


# --backend choices: every registered backend (engine/backends/__init__.py), by its registry name.
EvalBackend = enum.StrEnum("EvalBackend", [(name, name) for name in backend_names()])


MODE_TITLES = {
    EvalMode.dense: "Dense (SCLIP only)",
    EvalMode.prompted_sam: "CLIP-guided SAM2 (prompted-sam)",
    EvalMode.sam_vote: "SAM2 regions vote (sam-vote)",
    EvalMode.regions: "Accuracy mode: SAM2 regions restrict SCLIP's attention and vote (regions)",
}

DatasetOpt = Annotated[
    str,
    typer.Option(
        "--dataset",
        help="voc21, voc20, context60, context59, coco-object, coco-stuff164k, cityscapes or ade20k; the "
        "original names pascal-voc (= voc21) and coco-stuff (= coco-stuff164k) work too.",
        rich_help_panel=DATA,
    ),
]
DataDirOpt = Annotated[
    Path,
    typer.Option(
        "--data-dir",
        help="Folder holding the benchmarks (MMSeg layout, or the original's pascal-voc/ and coco-stuff/).",
        rich_help_panel=DATA,
    ),
]
NumSamplesOpt = Annotated[
    int | None,
    typer.Option("--num-samples", min=1, help="Evaluate only the first N images.", rich_help_panel=DATA),
]
ModeOpt = Annotated[
    EvalMode,
    typer.Option(
        "--mode",
        help="dense: SCLIP; prompted-sam; sam-vote; regions.",
        rich_help_panel=MODEL,
        show_default=True,
    ),
]
UseSamOpt = Annotated[
    bool,
    typer.Option(
        "--use-sam",
        help="The original's SCLIP + SAM hybrid mode: the same as --mode prompted-sam (CLIP-guided SAM2 "
        "masks painted by class over the dense map).",
        rich_help_panel=MODEL,
    ),
]
ModelOpt = Annotated[
    str,
    typer.Option("--model", help="CLIP backbone; SCLIP uses ViT-B/16 only.", rich_help_panel=MODEL),
]
LogitScaleOpt = Annotated[
    float | None,
    typer.Option(
        "--logit-scale",
        min=0.0,
        help="Softmax temperature multiplier. [default: the dataset's published value, 40 for most]",
        rich_help_panel=MODEL,
    ),
]
SlideInferenceOpt = Annotated[
    bool,
    typer.Option(
        "--slide-inference",
        help="Sliding-window inference (SCLIP's protocol; always on, accepted for the original's commands).",
        rich_help_panel=MODEL,
    ),
]
SlideCropOpt = Annotated[
    int | None,
    typer.Option("--slide-crop", min=16, help="Sliding window size. [default: 224]", rich_help_panel=MODEL),
]
SlideStrideOpt = Annotated[
    int | None,
    typer.Option(
        "--slide-stride", min=1, help="Sliding window stride. [default: 112]", rich_help_panel=MODEL
    ),
]
UsePamrOpt = Annotated[
    bool, typer.Option("--use-pamr", help="PAMR (10 steps, dilations 8, 16).", rich_help_panel=MODEL)
]
OutputDirOpt = Annotated[
    Path | None,
    typer.Option("--output-dir", help="[default: eval_results/DATASET-MODE]", rich_help_panel=OUTPUT),
]
SaveVisOpt = Annotated[
    bool,
    typer.Option(
        "--save-vis",
        help="Write image | GT | prediction pictures to visualizations/.",
        rich_help_panel=OUTPUT,
    ),
]
AddressOpt = Annotated[
    str | None,
    typer.Option(
        "--address",
        help="Shard the images over an existing Ray cluster (auto, or ray://HOST:PORT) with Ray Data: one "
        "warm engine per actor; --data-dir and --output-dir must be folders every node sees. The metrics are "
        "the local run's (the confusion counts are sums).",
        rich_help_panel=RUNTIME,
    ),
]
ActorsOpt = Annotated[
    int, typer.Option("--actors", min=1, help="--address: the most Ray Data actors.", rich_help_panel=RUNTIME)
]
ResumeOpt = Annotated[
    bool, typer.Option("--resume", help="Continue an interrupted run.", rich_help_panel=OUTPUT)
]
SeedOpt = Annotated[
    int,
    typer.Option(
        "--seed",
        min=0,
        max=2**64 - 1,
        help="Seed of --random-weights (0 … 2**64-1).",
        rich_help_panel=RUNTIME,
    ),
]
DeviceOpt = Annotated[
    str,
    typer.Option("--device", help="auto, cpu or cuda (the torch reference only).", rich_help_panel=RUNTIME),
]
SamModelOpt = Annotated[
    str, typer.Option("--sam-model", help="SAM2 model name (see `clipsam models`).", rich_help_panel=SAM2)
]
BackendOpt = Annotated[
    EvalBackend,
    typer.Option(
        "--backend",
        help=f"{', '.join(artifact_backends())} (exported graphs: --artifacts DIR, else the engine cache's, "
        f"built on first use), or {' / '.join(reference_backends())} (the pure PyTorch reference).",
        rich_help_panel=RUNTIME,
    ),
]
ArtifactsOpt = Annotated[
    Path | None,
    typer.Option(
        "--artifacts",
        help=f"Exported artifacts folder (--backend {' / '.join(artifact_backends())}) [default: the engine "
        "cache's folder for the chosen weights].",
        rich_help_panel=RUNTIME,
    ),
]
MinConfidenceOpt = Annotated[
    float,
    typer.Option(min=0.0, max=1.0, help="prompted-sam: minimum region confidence.", rich_help_panel=SAM2),
]
MaxPromptsOpt = Annotated[
    int | None,
    typer.Option(min=1, help="prompted-sam: at most this many prompts per image.", rich_help_panel=SAM2),
]
VotePointsOpt = Annotated[
    int, typer.Option(min=1, help="sam-vote: points per side of the SAM2 prompt grid.", rich_help_panel=SAM2)
]
SamCheckpointOpt = Annotated[
    Path | None,
    typer.Option("--checkpoint", "--sam-checkpoint", help="SAM2 checkpoint file.", rich_help_panel=SAM2),
]


def resolve_mode(mode: EvalMode, mode_given: bool, use_sam: bool) -> EvalMode:
    """--use-sam is --mode prompted-sam; an error when it contradicts an explicit --mode."""
    if not use_sam:
        return mode
    if mode_given and mode is not EvalMode.prompted_sam:
        raise ClipsamError(
            f"--use-sam means --mode prompted-sam, but --mode {mode.value} was given: give one"
        )
    return EvalMode.prompted_sam


def check_clip_model(model: str) -> None:
    if model not in CLIP_MODEL_NAMES:
        raise ClipsamError(f"--model {model!r}: SCLIP runs on CLIP ViT-B/16 only (use --model ViT-B/16)")


def dense_config(preset, logit_scale: float | None, crop: int | None, stride: int | None):
    """The dataset's DenseConfig with the given overrides (None keeps the published value)."""
    overrides = {"logit_scale": logit_scale, "crop": crop, "stride": stride}
    try:
        return replace(preset, **{key: value for key, value in overrides.items() if value is not None})
    except ValueError as err:
        raise ClipsamError(str(err)) from None


def run_config(mode, use_pamr, dense, models, num_samples, options, vote_points) -> dict:
    """The settings stored in results.json (a resumed run must have the same)."""
    from clipsam.engine.regions import RegionOptions

    return {
        "mode": mode.value,
        "use_pamr": use_pamr,
        "dense_config": dict(vars(dense)),
        "models": models,
        "num_samples": num_samples,
        "segment_options": dict(vars(options)) if mode is EvalMode.prompted_sam else None,
        "vote_points_per_side": vote_points if mode is EvalMode.sam_vote else None,
        **({"regions": RegionOptions().record()} if mode is EvalMode.regions else {}),
    }


def header(dataset: str, data, num_samples: int | None, model: str, mode: EvalMode, use_pamr: bool) -> str:
    """The original's banner: dataset and sample count, model, mode."""
    count = min(num_samples or len(data), len(data))
    return "\n".join(
        [
            "SCLIP Benchmark Evaluation",
            "=" * 50,
            f"Dataset: {dataset} ({count} samples)",
            f"Model: {model}",
            f"Mode: {MODE_TITLES[mode]}" + (" + PAMR" if use_pamr else ""),
            "=" * 50,
        ]
    )


def results_text(metrics, seconds_per_image: float) -> str:
    """The original's result block (metrics in percent)."""
    return "\n".join(
        [
            "Results:",
            f"  mIoU: {metrics.miou:.2f}%",
            f"  Pixel Accuracy: {metrics.aacc:.2f}%",
            f"  Mean Accuracy: {metrics.macc:.2f}%",
            f"  Avg Time: {seconds_per_image:.2f}s per image",
        ]
    )
