"""Generative edits of a segmented region with a Stable Diffusion inpainting pipeline (diffusers).

`remove` repaints the target from its surroundings; `replace` paints `edit_prompt` into it (a restyle is a
replace with a style prompt). diffusers / torch are imported only when an edit runs.
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from clipsam.engine.edit.mask import paste_back, plan_region, to_work
from clipsam.engine.errors import ClipsamError

if TYPE_CHECKING:
    import torch

DEFAULT_INPAINT_MODEL = "stable-diffusion-v1-5/stable-diffusion-inpainting"
# Without a description of the scene, steer away from painting a new object into the hole.
REMOVE_PROMPT = "empty background, seamless continuation of the surrounding scene"
REMOVE_NEGATIVE_PROMPT = "object, person, animal, text, watermark, frame, blurry, distorted"
EditKind = Literal["remove", "replace"]
ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class InpaintOptions:
    """Settings of a generative edit (CLI: --inpaint-model, --allow-download, --steps, --guidance-scale,
    --strength, --seed, --device). Invalid values raise ClipsamError with one line."""

    model: str = DEFAULT_INPAINT_MODEL  # hub id (looked up in the diffusers cache) or a local folder
    allow_download: bool = False
    steps: int = 30
    guidance_scale: float = 7.5
    strength: float = 1.0
    seed: int = 0
    device: str = "auto"
    dilate_px: int = 8
    feather_px: int = 6
    max_side: int = 512

    def __post_init__(self) -> None:
        checks = [
            (self.steps >= 1, f"--steps must be at least 1 (got {self.steps})"),
            (self.guidance_scale >= 0, f"--guidance-scale must be >= 0 (got {self.guidance_scale})"),
            (0 < self.strength <= 1, f"--strength must be in (0, 1] (got {self.strength})"),
            (self.dilate_px >= 0, f"mask dilation must be >= 0 pixels (got {self.dilate_px})"),
            (self.feather_px >= 0, f"mask feather must be >= 0 pixels (got {self.feather_px})"),
            (
                self.max_side >= 64 and self.max_side % 8 == 0,
                f"inpainting size must be a multiple of 8 and >= 64 (got {self.max_side})",
            ),
            (
                self.device in ("auto", "cpu", "mps") or self.device.startswith("cuda"),
                f"--device must be auto, cpu, cuda[:N] or mps (got '{self.device}')",
            ),
            (bool(self.model.strip()), "--inpaint-model must not be empty"),
        ]
        for ok, message in checks:
            if not ok:
                raise ClipsamError(message)
        if self.strength * self.steps < 1:
            raise ClipsamError(
                f"--strength {self.strength} × --steps {self.steps} leaves no denoising step; raise either"
            )


@dataclass(frozen=True)
class PromptEmbeddings:
    """Text conditioning given directly instead of a prompt (tests, random weights).

    positive / negative: float [1, T, D] tensors (D = the UNet's cross-attention width).
    """

    positive: torch.Tensor
    negative: torch.Tensor


def check_edit_request(mode: str, edit_prompt: str | None) -> None:
    """Fail early (before segmentation runs) on an edit that cannot run."""
    if mode not in ("remove", "replace"):
        raise ClipsamError(f"inpainting edits are 'remove' or 'replace', not '{mode}'")
    if mode == "replace" and not (edit_prompt and edit_prompt.strip()):
        raise ClipsamError(
            '--edit replace with --use-inpainting needs --edit-prompt "…" (what to paint in the mask)'
        )


def resolve_device(device: str) -> str:
    """'auto' → 'cuda' when torch sees a GPU, else 'cpu'; other names unchanged."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _missing_model_message(options: InpaintOptions) -> str:
    from huggingface_hub import constants

    path = Path(options.model).expanduser()
    if path.is_dir():
        return (
            f"inpainting model folder '{path}' is not a complete diffusers inpainting pipeline "
            "(model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/); fix --inpaint-model"
        )
    if options.model.startswith(("/", ".", "~")) or "\\" in options.model:
        return f"inpainting model folder '{path}' does not exist; fix --inpaint-model"
    if options.allow_download:
        return (
            f"inpainting model '{options.model}' could not be downloaded (offline or unknown id?); "
            "check --inpaint-model and the network"
        )
    return (
        f"inpainting model '{options.model}' is not in the diffusers cache ({constants.HF_HUB_CACHE}); "
        "run once with --allow-download to fetch it (about 4 GB), "
        "or pass --inpaint-model DIR with a local copy"
    )


def load_inpaint_pipeline(options: InpaintOptions) -> Any:
    """diffusers' StableDiffusionInpaintPipeline of `options.model` on its device (fp16 on CUDA, else fp32).

    Reads only local files unless `options.allow_download`. Raises ClipsamError (one line) when diffusers'
    transformers dependency is missing or the model is not available.
    """
    import diffusers
    import torch
    from diffusers.utils import is_accelerate_available, is_transformers_available

    if not is_transformers_available():
        raise ClipsamError("inpainting needs the 'transformers' package: pip install transformers")
    device = resolve_device(options.device)
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    local_dir = Path(options.model).expanduser()
    try:
        with _quiet_diffusers():
            pipeline = diffusers.StableDiffusionInpaintPipeline.from_pretrained(
                str(local_dir) if local_dir.is_dir() else options.model,
                dtype=dtype,
                local_files_only=not options.allow_download,
                # Without `accelerate`, diffusers would warn and fall back to this anyway.
                low_cpu_mem_usage=is_accelerate_available(),
                **_absent_components(local_dir),
            )
    except (OSError, ValueError) as err:
        # diffusers / huggingface_hub report a missing or partial model with these (EnvironmentError,
        # LocalEntryNotFoundError, HFValidationError for a path that is neither a folder nor a hub id).
        raise ClipsamError(_missing_model_message(options)) from err
    return pipeline.to(device)


@contextmanager
def _quiet_diffusers() -> Iterator[None]:
    """diffusers' loading progress bar and log lines off while loading: a failure is then reported in one
    line by the caller, and a success prints nothing of diffusers' own."""
    from diffusers.utils import logging as diffusers_logging

    verbosity, bar = diffusers_logging.get_verbosity(), diffusers_logging.is_progress_bar_enabled()
    diffusers_logging.set_verbosity(logging.CRITICAL)  # it logs a missing file as an error, then raises
    diffusers_logging.disable_progress_bar()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(verbosity)
        if bar:
            diffusers_logging.enable_progress_bar()


def _absent_components(folder: Path) -> dict[str, None]:
    """Components a saved pipeline folder declares absent (`[null, null]` in model_index.json, e.g. one
    saved without a text encoder): diffusers loads such a folder only when they are passed as None."""
    index = folder / "model_index.json"
    if not index.is_file():
        return {}
    try:
        entries = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # diffusers reports the broken folder itself
    return {name: None for name, value in entries.items() if value == [None, None]}


def random_inpaint_pipeline(seed: int = 0) -> Any:
    """A tiny randomly initialised inpainting pipeline (real diffusers classes, no files, no text encoder).

    UNet: 9 input channels (latents, mask, masked-image latents), cross-attention width 32; VAE with
    scale factor 8 like SD's. Use with `random_prompt_embeddings`; its pictures are noise, not edits.
    """
    import diffusers
    import torch

    torch.manual_seed(seed)
    unet = diffusers.UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=32,
        in_channels=9,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=16,
    )
    # Four VAE levels give SD's latent scale factor 8, so work sizes cost what they would with the real model.
    vae = diffusers.AutoencoderKL(
        block_out_channels=(8, 16, 16, 16),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        norm_num_groups=8,
        layers_per_block=1,
    )
    scheduler = diffusers.DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return diffusers.StableDiffusionInpaintPipeline(
        vae=vae.eval(),
        text_encoder=None,
        tokenizer=None,
        unet=unet.eval(),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def random_prompt_embeddings(pipeline: Any, text: str, seed: int = 0, tokens: int = 8) -> PromptEmbeddings:
    """Seeded stand-in text conditioning for a pipeline without a text encoder: different texts differ."""
    import torch

    width = pipeline.unet.config.cross_attention_dim
    generator = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(text.encode()))
    positive = torch.randn(1, tokens, width, generator=generator)
    negative = torch.zeros(1, tokens, width)
    return PromptEmbeddings(positive, negative)


def _text_conditioning(
    mode: EditKind,
    edit_prompt: str | None,
    prompt_embeds: PromptEmbeddings | None,
    pipeline: Any,
    device: str,
) -> dict[str, Any]:
    if prompt_embeds is not None:
        dtype = pipeline.unet.dtype
        return {
            "prompt_embeds": prompt_embeds.positive.to(device, dtype),
            "negative_prompt_embeds": prompt_embeds.negative.to(device, dtype),
        }
    if getattr(pipeline, "tokenizer", None) is None:
        raise ClipsamError("this inpainting pipeline has no text encoder; pass prompt embeddings")
    if mode == "remove":
        return {"prompt": edit_prompt or REMOVE_PROMPT, "negative_prompt": REMOVE_NEGATIVE_PROMPT}
    return {"prompt": edit_prompt, "negative_prompt": None}


def _step_callback(progress: ProgressFn | None) -> Callable | None:
    if progress is None:
        return None

    def on_step_end(pipeline: Any, step: int, timestep: Any, tensors: dict) -> dict:
        progress(step + 1, pipeline.num_timesteps)
        return tensors

    return on_step_end


def inpaint_edit(
    image_u8: np.ndarray,
    target_mask: np.ndarray,
    *,
    mode: EditKind,
    edit_prompt: str | None,
    options: InpaintOptions,
    progress: ProgressFn | None = None,
    pipeline: Any | None = None,
    prompt_embeds: PromptEmbeddings | None = None,
) -> np.ndarray:
    """uint8 [H, W, 3]: `image_u8` (uint8 [H, W, 3] RGB) with `target_mask` (bool [H, W]) removed or replaced.

    The mask is grown by `options.dilate_px` and feathered by `options.feather_px`; the model sees the grown
    mask's box plus context at a long side of `options.max_side`. Pixels outside the grown mask are
    byte-identical to the input; an empty mask returns a copy without loading any model.
    `pipeline`: a loaded pipeline (default: `load_inpaint_pipeline(options)`); `prompt_embeds` replaces the
    prompt encoding (for pipelines without a text encoder). `progress(step, total)` after each denoising step.
    """
    check_edit_request(mode, edit_prompt)
    assert image_u8.dtype == np.uint8 and image_u8.ndim == 3 and image_u8.shape[2] == 3, image_u8.shape
    assert target_mask.shape == image_u8.shape[:2], (target_mask.shape, image_u8.shape)
    if not target_mask.any():
        return image_u8.copy()
    import torch

    pipeline = load_inpaint_pipeline(options) if pipeline is None else pipeline
    device = str(pipeline.device)
    region = plan_region(target_mask.astype(bool), options.dilate_px, options.feather_px, options.max_side)
    work_image, work_mask = to_work(image_u8, region)
    pipeline.set_progress_bar_config(disable=True)
    output = pipeline(
        image=work_image,
        mask_image=work_mask,
        height=region.work_hw[0],
        width=region.work_hw[1],
        strength=options.strength,
        num_inference_steps=options.steps,
        guidance_scale=options.guidance_scale,
        # A CPU generator gives the same noise whatever the device, so --seed reproduces across machines.
        generator=torch.Generator("cpu").manual_seed(options.seed),
        output_type="np",
        callback_on_step_end=_step_callback(progress),
        **_text_conditioning(mode, edit_prompt, prompt_embeds, pipeline, device),
    )
    if output.nsfw_content_detected and any(output.nsfw_content_detected):
        raise ClipsamError(
            "the model's safety checker blanked the result; try another --edit-prompt or --seed"
        )
    generated = np.clip(np.round(output.images[0] * 255.0), 0, 255).astype(np.uint8)
    return paste_back(image_u8, generated, region)
