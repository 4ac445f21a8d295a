"""`clipsam segment`, `clipsam dense` and `clipsam demo`."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from clipsam.cli import model_options as mo
from clipsam.engine.errors import ClipsamError, VocabularyError
from clipsam.engine.manifest import check_precision
from clipsam.engine.types import SegmentationResult

stdout = Console()
stderr = Console(stderr=True, soft_wrap=True)


class EditMode(enum.StrEnum):
    segment = "segment"
    replace = "replace"
    remove = "remove"


ImageOpt = Annotated[Path, typer.Option("--image", "-i", help="Input image (PNG / JPEG / …).")]
VocabOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--vocabulary",
        "-V",
        help="A class name (repeat for several; 'background' adds SCLIP's background class).",
    ),
]
ClassFileOpt = Annotated[
    Path | None, typer.Option("--class-file", help="One class per line, synonyms separated by ', '.")
]
ClipCkptOpt = Annotated[
    Path | None, typer.Option("--clip-checkpoint", help="OpenAI-format or open_clip CLIP file.")
]
RandomOpt = Annotated[
    bool, typer.Option("--random-weights", help="Seeded random weights of the real architectures (no files).")
]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of --random-weights.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu or cuda (torch backend).")]
BackendOpt = Annotated[
    str,
    typer.Option("--backend", help="torch (the pure PyTorch reference) or onnxruntime (needs --artifacts)."),
]
ArtifactsOpt = Annotated[Path | None, typer.Option("--artifacts", help="Folder made by `clipsam export`.")]
ProvidersOpt = Annotated[str, typer.Option("--providers", help="onnxruntime providers: auto or a list.")]
PrecisionOpt = Annotated[
    str,
    typer.Option(
        "--precision",
        help="exact (fp32) or fast (onnxruntime, int8 SAM2 encoder from `clipsam export --int8`).",
    ),
]
SamModelOpt = Annotated[str, typer.Option("--sam-model", help="SAM2 model name (see `clipsam models`).")]


def segment(
    image: ImageOpt,
    vocabulary: VocabOpt = None,
    class_file: ClassFileOpt = None,
    prompt: Annotated[
        str | None, typer.Option("--prompt", help="Class to edit (and to keep, with --edit segment).")
    ] = None,
    edit: Annotated[
        EditMode,
        typer.Option("--edit", help="segment: overlay; replace: mask or new content; remove: erase."),
    ] = EditMode.segment,
    output: Annotated[Path, typer.Option("--output", "-o", help="Output picture (.png / .jpg).")] = Path(
        "output.png"
    ),
    json_path: Annotated[Path | None, typer.Option("--json", help="Write COCO-RLE results here.")] = None,
    min_confidence: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Minimum mean top-class probability of a region.")
    ] = 0.7,
    min_region_size: Annotated[
        int, typer.Option(min=0, help="Minimum region / mask size in image pixels.")
    ] = 100,
    iou_threshold: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Same-class masks above this IoU are duplicates.")
    ] = 0.8,
    max_prompts: Annotated[
        int | None, typer.Option(min=1, help="Keep at most this many (most confident) prompts.")
    ] = None,
    use_boxes: Annotated[bool, typer.Option("--use-boxes", help="Also give SAM2 each region's box.")] = False,
    device: DeviceOpt = "auto",
    checkpoint: Annotated[Path | None, typer.Option("--checkpoint", help="SAM2 checkpoint file.")] = None,
    model_cfg: Annotated[
        str | None, typer.Option("--model-cfg", help="SAM2 config, e.g. configs/sam2.1/sam2.1_hiera_t.yaml.")
    ] = None,
    sam_model: SamModelOpt = "sam2.1-hiera-tiny",
    clip_checkpoint: ClipCkptOpt = None,
    backend: BackendOpt = "torch",
    artifacts: ArtifactsOpt = None,
    providers: ProvidersOpt = "auto",
    precision: PrecisionOpt = "exact",
    random_weights: RandomOpt = False,
    seed: SeedOpt = 0,
    use_inpainting: Annotated[
        bool, typer.Option("--use-inpainting", help="remove / replace with Stable Diffusion inpainting.")
    ] = False,
    edit_prompt: Annotated[str | None, typer.Option("--edit-prompt", help="What to paint (replace).")] = None,
    inpaint_model: Annotated[
        str | None, typer.Option("--inpaint-model", help="diffusers inpainting model id or folder.")
    ] = None,
    steps: Annotated[int, typer.Option(min=1, help="Denoising steps.")] = 30,
    guidance_scale: Annotated[float, typer.Option(min=0.0, help="Classifier-free guidance.")] = 7.5,
    strength: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="How much of the region is repainted.")
    ] = 1.0,
    allow_download: Annotated[
        bool, typer.Option("--allow-download", help="Let diffusers download the inpainting model.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Print per-stage timings.")] = False,
) -> None:
    """Segment the vocabulary's classes in an image: overlay / mask / edit picture and COCO-RLE JSON."""
    from clipsam.engine import image_io
    from clipsam.engine.pipeline import SegmentOptions

    mo.check_backend(backend, artifacts)
    check_precision(precision, backend)
    sam_name = mo.sam_name_from_cfg(model_cfg) if model_cfg else mo.get_model(sam_model, "sam2").name
    vocab = _vocabulary(vocabulary, class_file)
    target = _edit_target(vocab.class_names, prompt, edit)
    inpaint = _inpaint_request(
        use_inpainting,
        edit,
        edit_prompt,
        inpaint_model,
        steps,
        guidance_scale,
        strength,
        allow_download,
        seed,
        device,
    )
    picture_in = image_io.load_image(image)
    image_io.check_writable(output, image_io.IMAGE_SUFFIXES)
    if json_path is not None:
        image_io.check_writable(json_path, (".json",))
    options = SegmentOptions(min_confidence, min_region_size, iou_threshold, max_prompts, use_boxes)
    if backend == "torch":
        choice = _model_choice(sam_name, checkpoint, clip_checkpoint, random_weights, seed, device)
        result = _run_segment(lambda: _reference_pipeline(choice), picture_in, vocab, options)
    else:
        result = _run_segment(
            lambda: _artifact_pipeline(artifacts, backend, providers, precision), picture_in, vocab, options
        )
    if target is not None and edit is EditMode.segment:
        result = _only_class(result, target)
    picture = _edited_picture(
        picture_in, result, edit, target, inpaint, random_weights or result.random_weights
    )
    _write_outputs(picture, result, output, json_path, image)
    _report(result, output, json_path, verbose, options)


def dense(
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
) -> None:
    """SCLIP's dense class map alone, saved as .npz (probs after synonym max and area_thd, pred)."""
    from clipsam.engine import image_io
    from clipsam.engine.backends.torch_reference import load_dense_backend
    from clipsam.engine.dense_clip import DenseConfig

    vocab = _vocabulary(vocabulary, class_file)
    picture_in = image_io.load_image(image)
    image_io.check_writable(out, (".npz",))
    try:
        config = DenseConfig(short_side, slide_crop, slide_stride, logit_scale, prob_thd, area_thd)
    except ValueError as err:
        raise ClipsamError(str(err)) from err
    clip_path = None if random_weights else mo.require_checkpoint(clip_checkpoint, mo.CLIP_NAME, "CLIP")
    # SAM2 is not built by `dense`; its fields keep their defaults.
    choice = mo.ModelChoice(
        clip_checkpoint=clip_path, clip_random=random_weights, seed=seed, device=_device(device)
    )
    with stderr.status("SCLIP dense map"):
        backend = load_dense_backend(choice)
        dense_map = backend.dense_predictor(vocab, config).predict(picture_in)
    with image_io.atomic_output(out) as stream:
        np.savez_compressed(
            stream,
            probs=dense_map.probs.astype(np.float32),
            pred=dense_map.pred.astype(np.int64),
            class_names=np.array(vocab.class_names),
            random_weights=np.array(backend.random_weights),
        )
    if backend.random_weights:
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
) -> None:
    """Segment a built-in street scene with checkpoints when present, random weights otherwise."""
    from clipsam.engine import image_io
    from clipsam.engine.demo_scene import DEMO_VOCABULARY, demo_scene
    from clipsam.engine.pipeline import SegmentOptions, vocabulary_from_words

    image_io.check_writable(output, image_io.IMAGE_SUFFIXES)
    if json_path is not None:
        image_io.check_writable(json_path, (".json",))
    name = mo.get_model(sam_model, "sam2").name
    clip_path, clip_random = mo.available_or_random(None, mo.CLIP_NAME)
    sam_path, sam_random = mo.available_or_random(None, name)
    clip_random, sam_random = clip_random or random_weights, sam_random or random_weights
    if clip_random or sam_random:
        stderr.print(
            "[yellow]warning:[/] no checkpoints found (or --random-weights): "
            "random weights, not real predictions"
        )
    choice = mo.ModelChoice(clip_path, clip_random, name, sam_path, sam_random, seed, _device(device))
    picture_in = demo_scene()
    vocab = vocabulary_from_words(list(DEMO_VOCABULARY))
    if min_confidence is None:
        # A random CLIP is near-uniform over classes: no region would pass 0.7 and the demo would be empty.
        min_confidence = 0.0 if clip_random else 0.7
    options = SegmentOptions(min_confidence=min_confidence, max_prompts=max_prompts)
    result = _run_segment(lambda: _reference_pipeline(choice), picture_in, vocab, options)
    picture = _edited_picture(picture_in, result, EditMode.segment, None, None, result.random_weights)
    _write_outputs(picture, result, output, json_path, Path("<demo scene>"))
    _report(result, output, json_path, True, options)


def _vocabulary(words: list[str] | None, class_file: Path | None):
    from clipsam.engine.pipeline import vocabulary_from_words
    from clipsam.engine.vocabulary import Vocabulary

    if class_file is not None and words:
        raise VocabularyError("give either --class-file or --vocabulary, not both")
    if class_file is not None:
        return Vocabulary.from_file(class_file)
    if not words:
        raise VocabularyError("the vocabulary is empty: give --vocabulary NAME (repeatable) or --class-file")
    return vocabulary_from_words(words)


def _edit_target(class_names: tuple[str, ...], prompt: str | None, edit: EditMode) -> str | None:
    if prompt is None:
        if edit is not EditMode.segment:
            raise ClipsamError(f"--edit {edit.value} needs --prompt CLASS (the class to {edit.value})")
        return None
    for name in class_names:
        if name.lower() == prompt.strip().lower():
            return name
    raise VocabularyError(f"--prompt '{prompt}' is not in the vocabulary ({', '.join(class_names)})")


def _device(device: str) -> str:
    from clipsam.engine.backends.torch_reference import resolve_device

    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise ClipsamError(f"unknown --device '{device}'; use auto, cpu or cuda")
    resolved = resolve_device(device)
    if resolved.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ClipsamError("--device cuda asked for, but torch sees no CUDA GPU; use --device cpu")
    return resolved


def _model_choice(sam_name, sam_ckpt, clip_ckpt, random_weights, seed, device) -> mo.ModelChoice:
    if random_weights:
        return mo.ModelChoice(None, True, sam_name, None, True, seed, _device(device))
    clip_path = mo.require_checkpoint(clip_ckpt, mo.CLIP_NAME, "CLIP")
    sam_path = mo.require_checkpoint(sam_ckpt, sam_name, "SAM2")
    return mo.ModelChoice(clip_path, False, sam_name, sam_path, False, seed, _device(device))


def _reference_pipeline(choice):
    from clipsam.engine.backends.torch_reference import build_reference_pipeline

    return build_reference_pipeline(choice)


def _artifact_pipeline(artifacts: Path, backend: str, providers: str, precision: str = "exact"):
    from clipsam.engine.pipeline import Pipeline

    return Pipeline.from_artifacts(artifacts, backend, providers, precision=precision)


def _run_segment(build_pipeline, image: np.ndarray, vocab, options) -> SegmentationResult:
    with stderr.status("loading models") as status:
        pipeline = build_pipeline()
        result = pipeline.segment(
            image, vocab, options, progress=lambda stage: status.update(f"stage: {stage}")
        )
    if result.timings_ms.get("num_prompts", 0) == 0:
        stderr.print(
            "[yellow]warning:[/] no prompts found: no region reached "
            f"--min-confidence {options.min_confidence} "
            f"and --min-region-size {options.min_region_size}; lower them to get segments"
        )
    return result


def _only_class(result: SegmentationResult, class_name: str) -> SegmentationResult:
    from dataclasses import replace

    return replace(result, segments=tuple(s for s in result.segments if s.class_name == class_name))


def _inpaint_request(
    use, edit: EditMode, edit_prompt, model, steps, guidance, strength, allow_download, seed, device
):
    """Validated inpainting options (before any model runs), or None when not inpainting."""
    if not use:
        if edit_prompt is not None:
            raise ClipsamError("--edit-prompt needs --use-inpainting")
        return None
    from clipsam.engine.edit import DEFAULT_INPAINT_MODEL, InpaintOptions, check_edit_request

    if edit is EditMode.segment:
        raise ClipsamError("--use-inpainting needs --edit remove or --edit replace")
    check_edit_request(edit.value, edit_prompt)
    options = InpaintOptions(
        model=model or DEFAULT_INPAINT_MODEL,
        allow_download=allow_download,
        steps=steps,
        guidance_scale=guidance,
        strength=strength,
        seed=seed,
        device=device,
    )
    return options, edit_prompt


def _edited_picture(image, result, edit: EditMode, target, inpaint, random_weights: bool) -> np.ndarray:
    from clipsam.engine import render

    if edit is EditMode.segment:
        return render.overlay(image, result)
    mask = render.target_mask(result, target)
    if inpaint is None:
        return render.mask_picture(mask) if edit is EditMode.replace else render.blacken(image, mask)
    return _inpaint(image, mask, edit, inpaint, random_weights)


def _inpaint(image, mask, edit: EditMode, inpaint, random_weights: bool) -> np.ndarray:
    from rich.progress import Progress

    from clipsam.engine.edit import inpaint_edit, random_inpaint_pipeline, random_prompt_embeddings

    options, edit_prompt = inpaint
    pipeline = embeds = None
    if random_weights:
        # Random segmentation weights: the inpainting model is a seeded random one too (labelled output).
        pipeline = random_inpaint_pipeline(options.seed)
        embeds = random_prompt_embeddings(pipeline, edit_prompt or "", options.seed)
        stderr.print("[yellow]warning:[/] random weights: inpainting with a random tiny diffusion model")
    with Progress(console=stderr, transient=True) as bar:
        task = bar.add_task("inpainting", total=options.steps)
        return inpaint_edit(
            image,
            mask,
            mode=edit.value,
            edit_prompt=edit_prompt,
            options=options,
            progress=lambda step, total: bar.update(task, completed=step, total=total),
            pipeline=pipeline,
            prompt_embeds=embeds,
        )


def _write_outputs(picture: np.ndarray, result, output: Path, json_path: Path | None, source: Path) -> None:
    from clipsam.engine import outputs

    outputs.write_picture(output, picture)
    if json_path is not None:
        outputs.write_json(json_path, outputs.result_to_json(result, str(source)))


def _report(result: SegmentationResult, output: Path, json_path: Path | None, verbose: bool, options) -> None:
    counts: dict[str, int] = {}
    for seg in result.segments:
        counts[seg.class_name] = counts.get(seg.class_name, 0) + 1
    summary = ", ".join(f"{name} ×{n}" for name, n in counts.items()) or "none"
    label = " [RANDOM WEIGHTS]" if result.random_weights else ""
    stdout.print(f"{len(result.segments)} segments{label}: {summary}")
    stdout.print(f"wrote {output}" + (f" and {json_path}" if json_path else ""))
    if verbose:
        table = Table("stage", "ms", title="per-stage wall time")
        for stage, value in result.timings_ms.items():
            table.add_row(stage, f"{value:.0f}" if not stage.startswith("num_") else f"{int(value)} (count)")
        stdout.print(table)


def register(app: typer.Typer) -> None:
    app.command()(segment)
    app.command()(dense)
    app.command()(demo)
