"""`clipsam eval` (the SCLIP benchmark protocol) and `clipsam convert-coco-object`."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from clipsam.engine.errors import ClipsamError

stdout = Console()
stderr = Console(stderr=True, soft_wrap=True)


class EvalMode(enum.StrEnum):
    dense = "dense"
    prompted_sam = "prompted-sam"
    sam_vote = "sam-vote"


class EvalBackend(enum.StrEnum):
    torch = "torch"
    onnxruntime = "onnxruntime"


def eval_command(
    dataset: Annotated[
        str,
        typer.Option(
            "--dataset",
            help="voc21, voc20, context60, context59, coco-object, coco-stuff164k, cityscapes or ade20k.",
        ),
    ],
    data_dir: Annotated[Path, typer.Option("--data-dir", help="Folder holding the benchmarks.")] = Path(
        "data/benchmarks"
    ),
    mode: Annotated[EvalMode, typer.Option("--mode", help="dense: SCLIP; prompted-sam; sam-vote.")] = (
        EvalMode.dense
    ),
    use_pamr: Annotated[bool, typer.Option("--use-pamr", help="PAMR (10 steps, dilations 8, 16).")] = False,
    backend: Annotated[
        EvalBackend, typer.Option("--backend", help="torch or onnxruntime.")
    ] = EvalBackend.torch,
    artifacts: Annotated[
        Path | None, typer.Option("--artifacts", help="Exported artifacts folder (--backend onnxruntime).")
    ] = None,
    clip_checkpoint: Annotated[
        Path | None, typer.Option("--clip-checkpoint", help="OpenAI-format or open_clip CLIP ViT-B/16 file.")
    ] = None,
    sam_model: Annotated[str, typer.Option("--sam-model", help="SAM2 model name.")] = "sam2.1-hiera-tiny",
    sam_checkpoint: Annotated[Path | None, typer.Option("--sam-checkpoint", help="SAM2 checkpoint.")] = None,
    random_weights: Annotated[
        bool, typer.Option("--random-weights", help="Seeded random weights (plumbing only, not real scores).")
    ] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of --random-weights.")] = 0,
    num_samples: Annotated[
        int | None, typer.Option("--num-samples", min=1, help="Evaluate only the first N images.")
    ] = None,
    save_vis: Annotated[
        bool, typer.Option("--save-vis", help="Write image | GT | prediction pictures.")
    ] = False,
    output_dir: Annotated[
        Path | None, typer.Option("--output-dir", help="[default: eval_results/DATASET-MODE]")
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run.")] = False,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda (torch backend).")] = "auto",
    min_confidence: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="prompted-sam: minimum region confidence.")
    ] = 0.7,
    max_prompts: Annotated[
        int | None, typer.Option(min=1, help="prompted-sam: at most this many prompts per image.")
    ] = None,
    vote_points: Annotated[
        int, typer.Option(min=1, help="sam-vote: points per side of the SAM2 prompt grid.")
    ] = 16,
) -> None:
    """Score SCLIP (and SAM2 refinement) on a benchmark with the published protocol: mIoU, aAcc, mAcc."""
    from clipsam.engine import datasets
    from clipsam.engine.dense_clip import PRESETS
    from clipsam.engine.eval_modes import ModePredictor
    from clipsam.engine.pipeline import SegmentOptions

    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise ClipsamError(f"unknown --device '{device}'; use auto, cpu or cuda")
    data = datasets.open_dataset(dataset, data_dir)
    vocabulary = datasets.benchmark_vocabulary(dataset)
    output_dir = output_dir or Path("eval_results") / f"{dataset}-{mode.value}{'-pamr' if use_pamr else ''}"
    _check_output_dir(output_dir)
    dense, masks, models, is_random = _backends(
        mode, backend, artifacts, clip_checkpoint, sam_model, sam_checkpoint, random_weights, seed, device
    )
    options = SegmentOptions(min_confidence=min_confidence, max_prompts=max_prompts)
    predictor = ModePredictor(
        dense, masks, vocabulary, PRESETS[dataset], mode=mode.value, use_pamr=use_pamr,
        has_background=data.spec.has_background, options=options, vote_points_per_side=vote_points,
    )  # fmt: skip
    config = {
        "mode": mode.value,
        "use_pamr": use_pamr,
        "dense_config": dict(vars(PRESETS[dataset])),
        "models": models,
        "num_samples": num_samples,
        "segment_options": dict(vars(options)) if mode is EvalMode.prompted_sam else None,
        "vote_points_per_side": vote_points if mode is EvalMode.sam_vote else None,
    }
    if is_random:
        stderr.print("[yellow]warning:[/] random weights: the scores are not real accuracy")
    result = _run(
        data, predictor, output_dir, vocabulary.class_names, config, num_samples, resume, save_vis, is_random
    )
    metrics = result.metrics
    stdout.print(
        f"{dataset} {mode.value}: mIoU {metrics.miou:.2f}  aAcc {metrics.aacc:.2f}  mAcc {metrics.macc:.2f} "
        f"over {result.num_images} images; wrote {output_dir}/results.json and summary.txt"
    )


def _run(data, predictor, output_dir, class_names, config, num_samples, resume, save_vis, is_random):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from clipsam.engine.evaluate import evaluate

    total = min(num_samples or len(data), len(data))
    columns = (
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[miou]}"), TimeRemainingColumn(),
    )  # fmt: skip
    with Progress(*columns, console=stderr, transient=True) as bar:
        task = bar.add_task(f"eval {data.spec.name}", total=total, miou="mIoU —")

        def progress(done: int, count: int, miou: float) -> None:
            bar.update(task, completed=done, miou=f"mIoU {miou:.2f}")

        return evaluate(
            data, predictor, output_dir, class_names=class_names, config=config, num_samples=num_samples,
            resume=resume, save_vis=save_vis, random_weights=is_random, setup_ms=predictor.setup_ms,
            progress=progress,
        )  # fmt: skip


def _check_output_dir(output_dir: Path) -> None:
    if output_dir.exists() and not output_dir.is_dir():
        raise ClipsamError(f"--output-dir '{output_dir}' is a file; give a folder")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ClipsamError(f"cannot create --output-dir '{output_dir}': {err.strerror or err}") from None


def _backends(
    mode, backend, artifacts, clip_checkpoint, sam_model, sam_checkpoint, random_weights, seed, device
):
    """(dense backend, SAM2 backend or None, models record, random weights?) for the chosen runtime."""
    if backend is EvalBackend.onnxruntime:
        if artifacts is None:
            raise ClipsamError("--backend onnxruntime needs --artifacts DIR (made by `clipsam export`)")
        from clipsam.engine.pipeline import Pipeline

        pipeline = Pipeline.from_artifacts(artifacts)
        return pipeline.dense_backend, pipeline.mask_backend, pipeline.models, pipeline.random_weights
    if artifacts is not None:
        raise ClipsamError("--artifacts is for --backend onnxruntime; drop it or add --backend onnxruntime")
    from clipsam.cli import model_options as mo
    from clipsam.engine.backends.torch_reference import load_dense_backend, load_sam2, resolve_device
    from clipsam.engine.backends.torch_sam2 import Sam2Reference

    sam_name = mo.get_model(sam_model, "sam2").name
    clip_path = None if random_weights else mo.require_checkpoint(clip_checkpoint, mo.CLIP_NAME, "CLIP")
    needs_sam = mode is not EvalMode.dense
    sam_path = (
        None if random_weights or not needs_sam else mo.require_checkpoint(sam_checkpoint, sam_name, "SAM2")
    )
    choice = mo.ModelChoice(
        clip_path, random_weights, sam_name, sam_path, random_weights, seed, resolve_device(device)
    )
    dense = load_dense_backend(choice)
    models = {"clip": {"name": mo.CLIP_NAME, "weights": dense.weights_id}, "backend": "torch"}
    masks = None
    if needs_sam:
        sam = load_sam2(choice)
        masks = Sam2Reference(sam)
        models["sam2"] = {"name": sam.name, "weights": sam.weights_id}
    return dense, masks, models, random_weights


def convert_coco_object(
    coco_stuff_root: Annotated[
        Path,
        typer.Argument(
            help="COCO-Stuff164k root (holds annotations/val2017), e.g. data/benchmarks/coco_stuff164k."
        ),
    ],
    split: Annotated[str, typer.Option("--split", help="Annotation split folder.")] = "val2017",
    panoptic_json: Annotated[
        Path | None, typer.Option("--panoptic-json", help="Convert from COCO panoptic_<split>.json instead.")
    ] = None,
    panoptic_dir: Annotated[
        Path | None,
        typer.Option("--panoptic-dir", help="The panoptic PNG folder [default: beside the JSON]."),
    ] = None,
) -> None:
    """Write COCO-Object labels (things → 1..80, stuff → 0) for `eval --dataset coco-object`."""
    from clipsam.engine.coco_object import convert_coco_object as convert

    with stderr.status("converting COCO-Object labels") as status:
        count = convert(
            coco_stuff_root, split=split, panoptic_json=panoptic_json, panoptic_dir=panoptic_dir,
            progress=lambda done, total: status.update(f"converting COCO-Object labels {done}/{total}"),
        )  # fmt: skip
    stdout.print(f"wrote {count} COCO-Object label files in {Path(coco_stuff_root) / 'annotations' / split}")


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
    app.command("convert-coco-object")(convert_coco_object)
