"""The picture `clipsam segment` writes: overlay, mask, blackened class, or an inpainting edit.

A named inpainting model (`--inpaint-model`) is always the model used, or a one-line error. The seeded random
tiny diffusion model stands in only when none was named, the default model is not in the diffusers cache, and
the run has random weights (--random-weights, or random segmentation models); every output then says so.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console

from clipsam.cli.segment_options import EditMode
from clipsam.engine.errors import ClipsamError

stderr = Console(stderr=True, soft_wrap=True)
# A Hugging Face hub id: "name" or "owner/name" (letters, digits, "-", "_", ".").
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


@dataclass(frozen=True)
class InpaintRequest:
    """options: engine.edit.InpaintOptions; named: the user gave --inpaint-model (never replaced)."""

    options: object
    edit_prompt: str | None
    named: bool


def inpaint_request(
    use: bool, edit: EditMode, edit_prompt: str | None, model: str | None, settings: dict
) -> InpaintRequest | None:
    """Validated inpainting options (before any model runs), or None when not inpainting.

    settings: the InpaintOptions fields steps, guidance_scale, strength, allow_download, seed, device.
    """
    for flag, name in (("--guidance-scale", "guidance_scale"), ("--strength", "strength")):
        if not math.isfinite(settings[name]):  # the option's range lets inf and nan through
            raise ClipsamError(f"{flag} must be a finite number, got {settings[name]}")
    if not use:
        if edit_prompt is not None:
            raise ClipsamError("--edit-prompt needs --use-inpainting")
        return None
    from clipsam.engine.edit.inpaint import DEFAULT_INPAINT_MODEL, InpaintOptions, check_edit_request

    if edit is EditMode.segment:
        raise ClipsamError("--use-inpainting needs --edit remove or --edit replace")
    check_edit_request(edit.value, edit_prompt)
    options = InpaintOptions(model=model or DEFAULT_INPAINT_MODEL, **settings)
    if model is not None:
        check_named_model(model, options.allow_download)
    return InpaintRequest(options, edit_prompt, named=model is not None)


def check_named_model(model: str, allow_download: bool) -> None:
    """A one-line error, before segmentation runs, for an --inpaint-model that cannot be loaded: a folder
    that does not exist or lacks model_index.json, or a hub id absent from the cache (without download)."""
    folder = Path(model).expanduser()
    if folder.is_dir():
        if not (folder / "model_index.json").is_file():
            raise ClipsamError(
                f"--inpaint-model folder '{folder}' holds no model_index.json: not a diffusers pipeline"
            )
        return
    if not HUB_ID.fullmatch(model):
        raise ClipsamError(f"--inpaint-model '{model}' is not a folder (does it exist?) nor a hub id")
    if allow_download:
        return
    if not _in_cache(model):
        raise ClipsamError(
            f"--inpaint-model '{model}' is neither a folder nor in the diffusers cache; pass a folder, or "
            "add --allow-download to fetch it"
        )


def _in_cache(hub_id: str) -> bool:
    """Whether the diffusers (Hugging Face hub) cache holds the pipeline `hub_id`."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(hub_id, "model_index.json"), str)


def edited_picture(image, result, edit: EditMode, target, inpaint, random_weights: bool) -> np.ndarray:
    """uint8 [H, W, 3]: the overlay (segment), the target's white-on-black mask (replace) or the image with
    the target blackened (remove), or the inpainting edit when `inpaint` is an InpaintRequest."""
    from clipsam.engine import render

    if edit is EditMode.segment or inpaint is None:
        return render.edit_picture(image, result, edit.value, target)
    return _inpaint(image, render.target_mask(result, target), edit, inpaint, random_weights)


def _inpaint(image, mask, edit: EditMode, inpaint: InpaintRequest, random_weights: bool) -> np.ndarray:
    from rich.progress import Progress

    from clipsam.engine.edit.inpaint import inpaint_edit

    pipeline, embeds = _inpaint_model(inpaint, random_weights) if mask.any() else (None, None)
    with Progress(console=stderr, transient=True) as bar:
        task = bar.add_task("inpainting", total=inpaint.options.steps)
        return inpaint_edit(
            image,
            mask,
            mode=edit.value,
            edit_prompt=inpaint.edit_prompt,
            options=inpaint.options,
            progress=lambda step, total: bar.update(task, completed=step, total=total),
            pipeline=pipeline,
            prompt_embeds=embeds,
        )


def _inpaint_model(inpaint: InpaintRequest, random_weights: bool):
    """(pipeline, prompt embeddings or None). The named model when there is one; else the default model when
    it is in the cache or random weights are not asked for (None: inpaint_edit loads it); else a seeded random
    tiny one (labelled)."""
    from clipsam.engine.edit.inpaint import (
        load_inpaint_pipeline,
        random_inpaint_pipeline,
        random_prompt_embeddings,
    )

    options, text = inpaint.options, inpaint.edit_prompt or ""
    if inpaint.named:
        pipeline = load_inpaint_pipeline(options)
        if getattr(pipeline, "tokenizer", None) is not None:
            return pipeline, None
        if not random_weights:
            raise ClipsamError(
                f"--inpaint-model '{options.model}' has no text encoder / tokenizer: give a complete "
                "inpainting pipeline (or add --random-weights for seeded stand-in text conditioning)"
            )
        stderr.print("[yellow]warning:[/] random weights: the inpainting model's text conditioning is random")
        return pipeline, random_prompt_embeddings(pipeline, text, options.seed)
    if not random_weights or _in_cache(options.model):
        return None, None  # inpaint_edit loads the default model
    pipeline = random_inpaint_pipeline(options.seed)
    stderr.print("[yellow]warning:[/] random weights: inpainting with a random tiny diffusion model")
    return pipeline, random_prompt_embeddings(pipeline, text, options.seed)
