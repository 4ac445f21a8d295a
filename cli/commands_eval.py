"""`clipsam eval` (the SCLIP benchmark protocol) and `clipsam convert-coco-object`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from clipsam.cli import eval_options as eo
from clipsam.cli import model_options as mo
from clipsam.cli.clipsam_command import ClipsamCommand
from clipsam.cli.eval_options import EvalBackend, EvalMode
from clipsam.cli.segment_options import ClipCkptOpt, RandomOpt, given
from clipsam.engine.errors import ClipsamError

stdout = Console()
stderr = Console(stderr=True, soft_wrap=True)


def eval_command(
    ctx: typer.Context,
    dataset: eo.DatasetOpt,
    data_dir: eo.DataDirOpt = Path("data/benchmarks"),
    num_samples: eo.NumSamplesOpt = None,
    mode: eo.ModeOpt = EvalMode.dense,
    use_sam: eo.UseSamOpt = False,
    model: eo.ModelOpt = "ViT-B/16",
    logit_scale: eo.LogitScaleOpt = None,
    slide_inference: eo.SlideInferenceOpt = False,
    slide_crop: eo.SlideCropOpt = None,
    slide_stride: eo.SlideStrideOpt = None,
    use_pamr: eo.UsePamrOpt = False,
    output_dir: eo.OutputDirOpt = None,
    save_vis: eo.SaveVisOpt = False,
    resume: eo.ResumeOpt = False,
    backend: eo.BackendOpt = EvalBackend.onnxruntime,
    artifacts: eo.ArtifactsOpt = None,
    clip_checkpoint: ClipCkptOpt = None,
    random_weights: RandomOpt = False,
    seed: eo.SeedOpt = 0,
    device: eo.DeviceOpt = "auto",
    sam_model: eo.SamModelOpt = mo.DEFAULT_SAM,
    checkpoint: eo.SamCheckpointOpt = None,
    min_confidence: eo.MinConfidenceOpt = 0.7,
    max_prompts: eo.MaxPromptsOpt = None,
    vote_points: eo.VotePointsOpt = 16,
    address: eo.AddressOpt = None,
    actors: eo.ActorsOpt = 2,
) -> None:
    """Score SCLIP (and SAM2 refinement) on a benchmark with the published protocol: mIoU, pixel accuracy,
    mean accuracy, time per image; writes results.json, summary.txt (and visualizations/)."""
    from clipsam.engine.dense_clip import PRESETS
    from clipsam.engine.eval import datasets
    from clipsam.engine.eval.modes import ModePredictor
    from clipsam.engine.pipeline import SegmentOptions

    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise ClipsamError(f"unknown --device '{device}'; use auto, cpu or cuda")
    eo.check_clip_model(model)
    if address is not None and backend is EvalBackend.torch:
        raise ClipsamError("--address runs the engine on the cluster: drop --backend torch")
    mode = eo.resolve_mode(mode, given(ctx, "mode"), use_sam)
    name = datasets.get_spec(dataset).name
    config_dense = eo.dense_config(PRESETS[name], logit_scale, slide_crop, slide_stride)
    data = datasets.open_dataset(name, data_dir)
    vocabulary = datasets.benchmark_vocabulary(name)
    output_dir = output_dir or Path("eval_results") / f"{dataset}-{mode.value}{'-pamr' if use_pamr else ''}"
    _check_output_dir(output_dir)
    stdout.print(eo.header(dataset, data, num_samples, model, mode, use_pamr), highlight=False)
    pipeline = _pipeline(
        mode, backend, artifacts, clip_checkpoint, sam_model, checkpoint, random_weights, seed, device
    )
    is_random = pipeline.random_weights
    options = SegmentOptions(min_confidence=min_confidence, max_prompts=max_prompts)
    predictor = ModePredictor(
        pipeline, vocabulary, config_dense, mode=mode.value, use_pamr=use_pamr,
        has_background=data.spec.has_background, options=options, vote_points_per_side=vote_points,
    )  # fmt: skip
    config = eo.run_config(mode, use_pamr, config_dense, pipeline.models, num_samples, options, vote_points)
    if is_random:
        stderr.print("[yellow]warning:[/] random weights: the scores are not real accuracy")
    runner = None
    if address is not None:
        from clipsam.serve.batch_data import EvalJob, eval_on_ray

        job = EvalJob(
            name, str(Path(data_dir).resolve()), str(Path(pipeline.models["artifacts"]).resolve()),
            backend.value, mode.value, use_pamr, config_dense, options, vote_points,
            vis_dir=str((output_dir / "visualizations").resolve()) if save_vis else None,
            random_weights=is_random,
        )  # fmt: skip
        runner = eval_on_ray(job, address, actors)
    result = _run(
        data, predictor, output_dir, vocabulary.class_names, config, num_samples, resume, save_vis, is_random,
        runner,
    )  # fmt: skip
    metrics = result.metrics
    stdout.print(eo.results_text(metrics, result.timings_ms.get("total", 0.0) / 1000), highlight=False)
    stdout.print(
        f"{name} {mode.value}: mIoU {metrics.miou:.2f}  aAcc {metrics.aacc:.2f}  mAcc {metrics.macc:.2f} "
        f"over {result.num_images} images; wrote {output_dir}/results.json and summary.txt",
        highlight=False,
        soft_wrap=True,
    )


def _run(data, predictor, output_dir, class_names, config, num_samples, resume, save_vis, is_random, runner):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from clipsam.engine.batch.runner import in_flight_for_cores
    from clipsam.engine.eval.evaluate import evaluate

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
            progress=progress, in_flight=in_flight_for_cores(), runner=runner,
        )  # fmt: skip


def _check_output_dir(output_dir: Path) -> None:
    if output_dir.exists() and not output_dir.is_dir():
        raise ClipsamError(f"--output-dir '{output_dir}' is a file; give a folder")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ClipsamError(f"cannot create --output-dir '{output_dir}': {err.strerror or err}") from None


def _pipeline(
    mode, backend, artifacts, clip_checkpoint, sam_model, sam_checkpoint, random_weights, seed, device
):
    """The Pipeline of the chosen registered backend, through the factory: SCLIP only in dense mode (the
    torch reference then loads no SAM2; an artifact folder holds what it was exported with; without one,
    the engine cache's folder for the chosen weights, built on first use)."""
    from clipsam.engine.backends import artifact_backends, backend_info
    from clipsam.engine.factory import load_pipeline

    stages = ("dense",) if mode is EvalMode.dense else ("dense", "masks")
    choice = None  # an artifact folder holds its own weights
    if not backend_info(backend.value).needs_artifacts and artifacts is not None:
        raise ClipsamError(
            f"--artifacts is for --backend {' / '.join(artifact_backends())}; drop it or add --backend "
            "onnxruntime"
        )
    if artifacts is None:
        weights = (clip_checkpoint, sam_model, sam_checkpoint, random_weights, seed, device)
        choice = _model_choice(stages, *weights)
    log = lambda message: stderr.print(f"clipsam: {message}", highlight=False)  # noqa: E731
    return load_pipeline(artifacts, backend.value, models=choice, stages=stages, log=log)


def _model_choice(stages, clip_checkpoint, sam_model, sam_checkpoint, random_weights, seed, device):
    """The reference's weights: each named checkpoint, else the downloaded one, else (--random-weights)
    random; SAM2's only when its stage is loaded (dense mode needs no SAM2 checkpoint)."""
    sam_name = mo.get_model(sam_model, "sam2").name
    clip_path, clip_random = mo.checkpoint_or_random(clip_checkpoint, mo.CLIP_NAME, "CLIP", random_weights)
    sam_path, sam_random = (
        mo.checkpoint_or_random(sam_checkpoint, sam_name, "SAM2", random_weights)
        if "masks" in stages
        else (None, True)
    )
    return mo.ModelChoice(clip_path, clip_random, sam_name, sam_path, sam_random, seed, device)


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
    from clipsam.engine.eval.coco_object import convert_coco_object as convert

    with stderr.status("converting COCO-Object labels") as status:
        count = convert(
            coco_stuff_root, split=split, panoptic_json=panoptic_json, panoptic_dir=panoptic_dir,
            progress=lambda done, total: status.update(f"converting COCO-Object labels {done}/{total}"),
        )  # fmt: skip
    stdout.print(f"wrote {count} COCO-Object label files in {Path(coco_stuff_root) / 'annotations' / split}")


def register(app: typer.Typer) -> None:
    app.command("eval", cls=ClipsamCommand)(eval_command)
    app.command("convert-coco-object")(convert_coco_object)
