"""`clipsam segment`, `clipsam dense` and `clipsam demo`."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from clipsam.cli import model_options as mo
from clipsam.cli import region_options as ro
from clipsam.cli import segment_batch as sb
from clipsam.cli import segment_options as so
from clipsam.cli import segment_pipelines as pl
from clipsam.cli import segment_points as sp
from clipsam.cli.clipsam_command import ClipsamCommand
from clipsam.cli.segment_edit import edited_picture, inpaint_request
from clipsam.cli.segment_options import (
    ArtifactsOpt,
    BackendOpt,
    ClassFileOpt,
    ClipCkptOpt,
    DeviceOpt,
    EditMode,
    ImageOpt,
    MaxPixelsOpt,
    PrecisionOpt,
    ProvidersOpt,
    RandomOpt,
    SamModelOpt,
    SeedOpt,
    VocabOpt,
)
from clipsam.engine.backends import check_precision
from clipsam.engine.errors import ClipsamError, VocabularyError
from clipsam.engine.image_io import DEFAULT_MAX_PIXELS
from clipsam.engine.types import SegmentationResult

stdout = Console()
stderr = Console(stderr=True, soft_wrap=True)


def segment(
    ctx: typer.Context,
    image: so.OneImageOpt = None,
    vocabulary: VocabOpt = None,
    class_file: ClassFileOpt = None,
    prompt: so.PromptOpt = None,
    edit: so.EditOpt = EditMode.segment,
    output: so.OutputOpt = so.DEFAULT_OUTPUT,
    json_path: so.JsonOpt = None,
    min_confidence: so.MinConfidenceOpt = 0.7,
    min_region_size: so.MinRegionOpt = 100,
    iou_threshold: so.IouOpt = 0.8,
    max_prompts: so.MaxPromptsOpt = None,
    use_boxes: so.UseBoxesOpt = False,
    device: DeviceOpt = "auto",
    checkpoint: so.CheckpointOpt = None,
    model_cfg: so.ModelCfgOpt = None,
    sam_model: SamModelOpt = mo.DEFAULT_SAM,
    clip_checkpoint: ClipCkptOpt = None,
    backend: BackendOpt = None,
    artifacts: ArtifactsOpt = None,
    providers: ProvidersOpt = "auto",
    precision: PrecisionOpt = "exact",
    random_weights: RandomOpt = False,
    seed: SeedOpt = 0,
    use_inpainting: so.UseInpaintingOpt = False,
    edit_prompt: so.EditPromptOpt = None,
    inpaint_model: so.InpaintModelOpt = None,
    steps: so.StepsOpt = 30,
    guidance_scale: so.GuidanceOpt = 7.5,
    strength: so.StrengthOpt = 1.0,
    allow_download: so.AllowDownloadOpt = False,
    verbose: so.VerboseOpt = False,
    max_pixels: MaxPixelsOpt = DEFAULT_MAX_PIXELS,
    points: sp.PointsOpt = None,
    boxes: sp.BoxesOpt = None,
    regions: ro.RegionsOpt = False,
    region_points: ro.RegionPointsOpt = ro.DEFAULT_POINTS,
    region_iou: ro.RegionIouOpt = ro.DEFAULT_IOU,
    server: Annotated[
        str | None,
        typer.Option(
            "--server", help="A running `clipsam serve` URL does the work.", rich_help_panel=so.RUNTIME
        ),
    ] = None,
    images: sb.ImagesOpt = None,
    out_dir: sb.OutDirOpt = None,
    resume: sb.ResumeOpt = False,
    no_picture: sb.NoPictureOpt = False,
    in_flight: sb.InFlightOpt = None,
    address: sb.AddressOpt = None,
    actors: sb.ActorsOpt = 2,
) -> None:
    """Segment the vocabulary's classes in an image: overlay / mask / edit picture and COCO-RLE JSON."""
    from clipsam import kernels

    kernels.warm_kernels_in_background()  # numba's first load, beside the imports and the model loading
    from clipsam.engine import image_io
    from clipsam.engine.pipeline import SegmentOptions

    if server is not None and (artifacts is not None or backend is not None):
        flag = "--artifacts" if artifacts is not None else "--backend"
        raise ClipsamError(f"--server runs the service's own models: drop {flag}, or drop --server")
    backend = so.resolve_backend(ctx, backend, artifacts)
    check_precision(backend, precision)
    sam_name = mo.sam_name(sam_model, model_cfg, so.given(ctx, "sam_model"))
    if points or boxes:  # SAM2 alone on the given prompts (cli/segment_points.py)
        given = {"--vocabulary": bool(vocabulary), "--class-file": class_file is not None}
        given.update({"--prompt": prompt is not None, "--use-boxes": use_boxes, "--max-prompts": max_prompts})
        sp.check_no_conflicts({**given, "--use-inpainting": use_inpainting})
        on_engine = artifacts is None and backend != "torch"  # SAM2 alone from the engine cache
        choice = (sam_name, checkpoint, None, random_weights, seed, "cpu", False)
        models = pl.model_choice(*choice) if on_engine else None
        run = {"artifacts": artifacts, "backend": backend, "providers": providers, "precision": precision}
        outputs = {"output": output, "json_path": json_path, "edit": edit.value, "verbose": verbose}
        sp.segment_given_prompts(
            image=image, points=points, boxes=boxes, models=models, max_pixels=max_pixels, **run, **outputs
        )
        return
    given = {"--image": image is not None, "--output": so.given(ctx, "output"), "--json": bool(json_path)}
    given.update({"--server": server is not None, "--use-inpainting": use_inpainting})
    sb.check_inputs(image, images, given, out_dir is not None or resume or address is not None)
    vocab = _vocabulary(vocabulary, class_file)
    target = _edit_target(vocab.class_names, prompt, edit)
    settings = {"steps": steps, "guidance_scale": guidance_scale, "strength": strength, "seed": seed}
    settings.update({"allow_download": allow_download, "device": device})
    inpaint = inpaint_request(use_inpainting, edit, edit_prompt, inpaint_model, settings)
    accuracy = ro.region_options(regions, region_points, region_iou, min_region_size)
    options = SegmentOptions(min_confidence, min_region_size, iou_threshold, max_prompts, use_boxes, accuracy)
    engine = {"providers": so.engine_providers(device, providers), "precision": precision}
    weights = {"checkpoint": checkpoint, "clip_checkpoint": clip_checkpoint, "random_weights": random_weights}
    asked_sam = sam_name if so.given(ctx, "sam_model") else None
    build = pl.pipeline_builder(backend, sam_name, asked_sam, artifacts, seed, device, engine, **weights)
    if images:
        picture = {"edit": edit.value, "target": target, "no_picture": no_picture, "max_pixels": max_pixels}
        run = {"resume": resume, "in_flight": in_flight, "address": address, "actors": actors}
        batch = sb.settings(vocab, options, **picture)
        return sb.run_images(images, out_dir, build, batch, backend, verbose=verbose, **run, **engine)
    picture_in = image_io.load_image(image, max_pixels)
    _check_outputs(output, json_path)
    if server is not None:  # the service runs the pipeline (clipsam/client.py)
        result = _server_result(server, image, vocabulary, class_file, options)
    else:
        result = _run_segment(build, picture_in, vocab, options)
    if target is not None and edit is EditMode.segment:
        result = _only_class(result, target)
    stand_in = random_weights or result.random_weights  # no weights named or found: random ones stand in
    picture = edited_picture(picture_in, result, edit, target, inpaint, stand_in)
    _write_outputs(picture, result, output, json_path, image)
    _report(result, output, json_path, verbose, options)


def dense(
    ctx: typer.Context,
    image: ImageOpt,
    out: Annotated[Path, typer.Option("--out", help="Output .npz with probs [C,H,W] and pred [H,W].")],
    class_file: ClassFileOpt = None,
    vocabulary: VocabOpt = None,
    clip_checkpoint: ClipCkptOpt = None,
    random_weights: RandomOpt = False,
    seed: SeedOpt = 0,
    short_side: Annotated[
        int, typer.Option(min=0, help="Resize the short side to this (0 = no resize).")
    ] = 336,
    slide_crop: Annotated[int, typer.Option(min=16, help="Sliding window size.")] = 224,
    slide_stride: Annotated[int, typer.Option(min=1, help="Sliding window stride.")] = 112,
    logit_scale: Annotated[float, typer.Option(min=0.0, help="Softmax temperature multiplier.")] = 40.0,
    prob_thd: Annotated[float, typer.Option(min=0.0, max=1.0, help="Pixels below it become class 0.")] = 0.0,
    area_thd: Annotated[
        float | None, typer.Option(min=0.0, max=1.0, help="Drop small foreground classes.")
    ] = None,
    device: DeviceOpt = "auto",
    max_pixels: MaxPixelsOpt = DEFAULT_MAX_PIXELS,
    backend: BackendOpt = None,
    artifacts: ArtifactsOpt = None,
    regions: ro.RegionsOpt = False,
    region_points: ro.RegionPointsOpt = ro.DEFAULT_POINTS,
    region_iou: ro.RegionIouOpt = ro.DEFAULT_IOU,
) -> None:
    """SCLIP's dense class map alone, saved as .npz (probs after synonym max and area_thd, pred); with
    --regions corrected by SAM2's regions (SAM2 runs too)."""
    from clipsam.engine import image_io
    from clipsam.engine.dense_clip import DenseConfig

    vocab = _vocabulary(vocabulary, class_file)
    picture_in = image_io.load_image(image, max_pixels)
    image_io.check_writable(out, (".npz",))
    config = DenseConfig(short_side, slide_crop, slide_stride, logit_scale, prob_thd, area_thd)
    accuracy = ro.region_options(regions, region_points, region_iou)
    stages = ("dense",) if accuracy is None else ("dense", "masks")
    backend = so.resolve_backend(ctx, backend, artifacts)
    choice = None
    if artifacts is None:  # the torch reference's or the engine's weights; SAM2 is not built by `dense`
        clip_path, clip_random = mo.checkpoint_or_random(
            clip_checkpoint, mo.CLIP_NAME, "CLIP", random_weights
        )
        torch_device = pl.torch_device(backend, device)
        choice = mo.ModelChoice(
            clip_checkpoint=clip_path, clip_random=clip_random, seed=seed, device=torch_device
        )
        if accuracy is not None:  # SAM2 too: its default model, found or (with --random-weights) random
            choice = pl.model_choice(
                mo.DEFAULT_SAM, None, clip_checkpoint, random_weights, seed, torch_device
            )
    with stderr.status("SCLIP dense map"):
        if backend == "torch":
            pipeline = pl.reference_pipeline(choice, stages=stages)
        else:
            providers = so.engine_providers(device, "auto")
            pipeline = pl.artifact_pipeline(artifacts, backend, providers, models=choice, stages=stages)
        dense_map = pipeline.dense(picture_in, vocab, config, regions=accuracy)
    with image_io.atomic_output(out) as stream:
        np.savez_compressed(
            stream,
            probs=dense_map.probs.astype(np.float32),
            pred=dense_map.pred.astype(np.int64),
            class_names=np.array(vocab.class_names),
            random_weights=np.array(pipeline.random_weights),
        )
    if pipeline.random_weights:
        stderr.print("[yellow]warning:[/] random weights: the dense map is not a real prediction")
    stdout.print(f"wrote {out}: probs {tuple(dense_map.probs.shape)}, pred {tuple(dense_map.pred.shape)}")


def demo(
    output: Annotated[Path, typer.Option("--output", "-o", help="Overlay picture.")] = Path(
        "clipsam_demo.png"
    ),
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write COCO-RLE results.")] = None,
    sam_model: SamModelOpt = "sam2.1-hiera-tiny",
    random_weights: RandomOpt = False,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    min_confidence: Annotated[
        float | None,
        typer.Option(min=0.0, max=1.0, help="[default: 0.7 with checkpoints, 0 with random weights]"),
    ] = None,
    max_prompts: Annotated[int, typer.Option(min=1, help="Keep at most this many prompts.")] = 32,
    backend: BackendOpt = None,
    precision: PrecisionOpt = "exact",
) -> None:
    """Segment a built-in street scene with checkpoints when present, random weights otherwise, on the
    engine (exported graphs from the engine cache, built on first use) unless --backend torch."""
    from clipsam.engine import image_io
    from clipsam.engine.bench.demo_scene import DEMO_VOCABULARY, demo_scene
    from clipsam.engine.pipeline import SegmentOptions, vocabulary_from_words

    image_io.check_writable(output, image_io.IMAGE_SUFFIXES)
    if json_path is not None:
        image_io.check_writable(json_path, (".json",))
    name = mo.get_model(sam_model, "sam2").name
    clip_path, clip_random = mo.available_or_random(None, mo.CLIP_NAME)
    sam_path, sam_random = mo.available_or_random(None, name)
    clip_random, sam_random = clip_random or random_weights, sam_random or random_weights
    if clip_random or sam_random:
        which = " + ".join(label for label, random in (("CLIP", clip_random), ("SAM2", sam_random)) if random)
        stderr.print(
            f"[yellow]warning:[/] no checkpoint found (or --random-weights): {which} random weights, "
            "not real predictions"
        )
    backend = backend or "onnxruntime"
    check_precision(backend, precision)
    torch_device = pl.torch_device(backend, device)
    choice = mo.ModelChoice(clip_path, clip_random, name, sam_path, sam_random, seed, torch_device)
    picture_in = demo_scene()
    vocab = vocabulary_from_words(list(DEMO_VOCABULARY))
    if min_confidence is None:
        # A random CLIP is near-uniform over classes: no region would pass 0.7 and the demo would be empty.
        min_confidence = 0.0 if clip_random else 0.7
    options = SegmentOptions(min_confidence=min_confidence, max_prompts=max_prompts)
    if backend == "torch":
        build = lambda: pl.reference_pipeline(choice)  # noqa: E731
    else:
        providers = so.engine_providers(device, "auto")
        build = lambda: pl.artifact_pipeline(None, backend, providers, precision, models=choice)  # noqa: E731
    result = _run_segment(build, picture_in, vocab, options)
    picture = edited_picture(picture_in, result, EditMode.segment, None, None, result.random_weights)
    _write_outputs(picture, result, output, json_path, Path("<demo scene>"))
    _report(result, output, json_path, True, options)


def _vocabulary(words: list[str] | None, class_file: Path | None):
    """The user's classes, from --vocabulary or --class-file under one rule (engine/vocabulary.py)."""
    from clipsam.engine.vocabulary import user_class_file, user_vocabulary

    if class_file is not None and words:
        raise VocabularyError("give either --class-file or --vocabulary, not both")
    if class_file is not None:
        return user_class_file(class_file)
    if not words:
        raise VocabularyError("the vocabulary is empty: give --vocabulary NAME [NAME ...] or --class-file")
    return user_vocabulary(words)


def _edit_target(class_names: tuple[str, ...], prompt: str | None, edit: EditMode) -> str | None:
    if prompt is None:
        if edit is not EditMode.segment:
            raise ClipsamError(f"--edit {edit.value} needs --prompt CLASS (the class to {edit.value})")
        return None
    for name in class_names:
        if name.lower() == prompt.strip().lower():
            return name
    names = ", ".join(repr(name) for name in class_names)
    raise VocabularyError(f"--prompt {prompt!r} is not in the vocabulary ({names})")


def _server_result(server: str, image: Path, vocabulary, class_file, options) -> SegmentationResult:
    """The service at `server` segments the image (clipsam/client.py)."""
    from clipsam.client import Client
    from clipsam.engine.vocabulary import read_class_lines

    if options.regions is not None:
        raise ClipsamError("--regions is not offered through --server yet: drop one of them")
    words = vocabulary or read_class_lines(class_file)
    fields = {key: value for key, value in asdict(options).items() if key != "regions"}
    return Client(server).segment_result(image, words, file=str(image), **fields)


def _check_outputs(output: Path, json_path: Path | None) -> None:
    from clipsam.engine import image_io

    image_io.check_writable(output, image_io.IMAGE_SUFFIXES)
    if json_path is not None:
        image_io.check_writable(json_path, (".json",))


def _run_segment(build_pipeline, image: np.ndarray, vocab, options) -> SegmentationResult:
    with stderr.status("loading models") as status:
        pipeline = build_pipeline()
        result = pipeline.segment(
            image, vocab, options, progress=lambda stage: status.update(f"stage: {stage}")
        )
    if result.counts.get("prompts", 0) == 0:
        stderr.print(
            "[yellow]WARNING:[/] No prompts found! Try lowering --min-confidence "
            f"(no region reached --min-confidence {options.min_confidence} "
            f"and --min-region-size {options.min_region_size}); the result is empty"
        )
    return result


def _only_class(result: SegmentationResult, class_name: str) -> SegmentationResult:
    from dataclasses import replace

    return replace(result, segments=tuple(s for s in result.segments if s.class_name == class_name))


def _write_outputs(picture: np.ndarray, result, output: Path, json_path: Path | None, source: Path) -> None:
    from clipsam.engine import outputs

    record = outputs.result_to_json(result, str(source)) if json_path is not None else None
    outputs.write_results(output, picture, json_path, record)  # both files or neither


def _report(result: SegmentationResult, output: Path, json_path: Path | None, verbose: bool, options) -> None:
    from clipsam.engine.render import random_model_labels

    counts: dict[str, int] = {}
    for seg in result.segments:
        counts[seg.class_name] = counts.get(seg.class_name, 0) + 1
    summary = ", ".join(f"{name} ×{n}" for name, n in counts.items()) or "none"
    which = ", ".join(random_model_labels(result.models))  # e.g. "SAM2": the models with random weights
    label = f" [RANDOM WEIGHTS{': ' + which if which else ''}]" if result.random_weights else ""
    stdout.print(f"{len(result.segments)} segments{label}: {summary}")
    stdout.print(f"wrote {output}" + (f" and {json_path}" if json_path else ""))
    if verbose:
        table = Table("stage", "ms", title="per-stage wall time")
        for stage, value in result.timings_ms.items():
            table.add_row(stage, f"{value:.0f}")
        stdout.print(table)
        stdout.print(", ".join(f"{name}: {count}" for name, count in result.counts.items()))


def register(app: typer.Typer) -> None:
    app.command(cls=ClipsamCommand)(segment)
    app.command(cls=ClipsamCommand)(dense)
    app.command(cls=ClipsamCommand)(demo)
