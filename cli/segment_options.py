"""The options of `clipsam segment`, `dense` and `demo`, grouped into help panels, and the checks that an
option given on the command line applies to the chosen backend."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

import typer

from clipsam.engine.backends import artifact_backends, reference_backends
from clipsam.engine.errors import ClipsamError

INPUT, VOCABULARY, PROMPTS, SAM2 = "Input", "Vocabulary", "Prompts", "SAM2 and merge"
OUTPUT, INPAINTING, RUNTIME = "Output and edit", "Inpainting", "Models and runtime"
DEFAULT_OUTPUT = Path("clip_guided_segments.png")  # the original project's default
# Options that only the torch backend reads: the artifacts hold their own weights and run where onnxruntime
# (or the chosen runtime) runs them.
TORCH_ONLY = {
    "checkpoint": "--checkpoint",
    "clip_checkpoint": "--clip-checkpoint",
    "model_cfg": "--model-cfg",
    "random_weights": "--random-weights",
    "device": "--device",
}


class EditMode(enum.StrEnum):
    segment = "segment"
    replace = "replace"
    remove = "remove"


ImageOpt = Annotated[
    Path, typer.Option("--image", "-i", help="Input image (PNG / JPEG / …).", rich_help_panel=INPUT)
]
OneImageOpt = Annotated[
    Path | None,
    typer.Option("--image", "-i", help="Input image (PNG / JPEG / …).", rich_help_panel=INPUT),
]
MaxPixelsOpt = Annotated[
    int,
    typer.Option(
        "--max-pixels",
        min=1,
        help="Refuse larger images (width × height) before decoding them.",
        rich_help_panel=INPUT,
    ),
]
VocabOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--vocabulary",
        "-V",
        metavar="NAME...",
        help='Class names: several after one flag (--vocabulary sky car "Stephen Curry") and / or the flag '
        "repeated; a name may hold ', '-separated synonyms; 'background' adds SCLIP's background class.",
        rich_help_panel=VOCABULARY,
    ),
]
ClassFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--class-file",
        help="One class per line, synonyms separated by ', '; a line 'background' as with --vocabulary.",
        rich_help_panel=VOCABULARY,
    ),
]
PromptOpt = Annotated[
    str | None,
    typer.Option(
        "--prompt", help="Class to edit (and to keep, with --edit segment).", rich_help_panel=OUTPUT
    ),
]
EditOpt = Annotated[
    EditMode,
    typer.Option(
        "--edit",
        help="segment: overlay; replace: mask or new content; remove: erase.",
        rich_help_panel=OUTPUT,
    ),
]
OutputOpt = Annotated[
    Path, typer.Option("--output", "-o", help="Output picture (.png / .jpg).", rich_help_panel=OUTPUT)
]
JsonOpt = Annotated[
    Path | None, typer.Option("--json", help="Write COCO-RLE results here.", rich_help_panel=OUTPUT)
]
MinConfidenceOpt = Annotated[
    float,
    typer.Option(
        min=0.0, max=1.0, help="Minimum mean class probability of a region.", rich_help_panel=PROMPTS
    ),
]
MinRegionOpt = Annotated[
    int, typer.Option(min=0, help="Minimum region / mask size in image pixels.", rich_help_panel=PROMPTS)
]
MaxPromptsOpt = Annotated[
    int | None,
    typer.Option(min=1, help="Keep at most this many (most confident) prompts.", rich_help_panel=PROMPTS),
]
UseBoxesOpt = Annotated[
    bool, typer.Option("--use-boxes", help="Also give SAM2 each region's box.", rich_help_panel=PROMPTS)
]
IouOpt = Annotated[
    float,
    typer.Option(
        min=0.0, max=1.0, help="Same-class masks above this IoU are duplicates.", rich_help_panel=SAM2
    ),
]
SamModelOpt = Annotated[
    str,
    typer.Option("--sam-model", help="SAM2 model name (see `clipsam models`).", rich_help_panel=SAM2),
]
CheckpointOpt = Annotated[
    Path | None, typer.Option("--checkpoint", help="SAM2 checkpoint file.", rich_help_panel=SAM2)
]
ModelCfgOpt = Annotated[
    str | None,
    typer.Option(
        "--model-cfg",
        help="SAM2 config, e.g. sam2_hiera_l.yaml or configs/sam2.1/sam2.1_hiera_t.yaml (names the model).",
        rich_help_panel=SAM2,
    ),
]
ClipCkptOpt = Annotated[
    Path | None,
    typer.Option("--clip-checkpoint", help="OpenAI-format or open_clip CLIP file.", rich_help_panel=RUNTIME),
]
RandomOpt = Annotated[
    bool,
    typer.Option(
        "--random-weights",
        help="Seeded random weights for every model that has no checkpoint (none given, none in the "
        "checkpoints folder); outputs say which models are random. Not with --artifacts.",
        rich_help_panel=RUNTIME,
    ),
]
SeedOpt = Annotated[
    int,
    typer.Option(
        "--seed",
        min=0,
        max=2**64 - 1,
        help="Seed of --random-weights and of inpainting (0 … 2**64-1).",
        rich_help_panel=RUNTIME,
    ),
]
DeviceOpt = Annotated[
    str,
    typer.Option(
        "--device",
        help="auto, cpu or cuda: where the torch reference (--backend torch) and inpainting run; the engine "
        "maps it to onnxruntime's CPU or CUDA provider.",
        rich_help_panel=RUNTIME,
    ),
]
BackendOpt = Annotated[
    str | None,
    typer.Option(
        "--backend",
        help=f"{', '.join(artifact_backends())} (exported graphs: --artifacts DIR, else the engine cache's, "
        f"built on first use), or {' / '.join(reference_backends())} (the pure PyTorch reference). "
        "[default: onnxruntime]",
        show_default=False,
        rich_help_panel=RUNTIME,
    ),
]
ArtifactsOpt = Annotated[
    Path | None,
    typer.Option(
        "--artifacts",
        help="Folder made by `clipsam export` [default: the engine cache's folder for the chosen weights, "
        "`clipsam engines`].",
        rich_help_panel=RUNTIME,
    ),
]
ProvidersOpt = Annotated[
    str,
    typer.Option("--providers", help="onnxruntime providers: auto or a list.", rich_help_panel=RUNTIME),
]
PrecisionOpt = Annotated[
    str,
    typer.Option(
        "--precision",
        help="exact (fp32) or fast: the int8 encoders of `clipsam export --int8` (OpenVINO) on CPUs with "
        "VNNI, bf16 encoders on bf16 CPUs, else the int8 SAM2 encoder; the JSON says which.",
        rich_help_panel=RUNTIME,
    ),
]
VerboseOpt = Annotated[
    bool, typer.Option("--verbose", "-v", help="Print per-stage timings.", rich_help_panel=RUNTIME)
]
UseInpaintingOpt = Annotated[
    bool,
    typer.Option(
        "--use-inpainting",
        help="remove / replace with Stable Diffusion inpainting.",
        rich_help_panel=INPAINTING,
    ),
]
EditPromptOpt = Annotated[
    str | None,
    typer.Option("--edit-prompt", help="What to paint (replace).", rich_help_panel=INPAINTING),
]
InpaintModelOpt = Annotated[
    str | None,
    typer.Option(
        "--inpaint-model",
        help="diffusers inpainting model: a hub id (from the diffusers cache) or a folder. A named model is "
        "always the one used. [default: stable-diffusion-v1-5/stable-diffusion-inpainting; with "
        "--random-weights, a seeded random tiny one]",
        rich_help_panel=INPAINTING,
    ),
]
StepsOpt = Annotated[int, typer.Option(min=1, help="Denoising steps.", rich_help_panel=INPAINTING)]
GuidanceOpt = Annotated[
    float, typer.Option(min=0.0, help="Classifier-free guidance.", rich_help_panel=INPAINTING)
]
StrengthOpt = Annotated[
    float,
    typer.Option(min=0.0, max=1.0, help="How much of the region is repainted.", rich_help_panel=INPAINTING),
]
AllowDownloadOpt = Annotated[
    bool,
    typer.Option(
        "--allow-download", help="Let diffusers download the inpainting model.", rich_help_panel=INPAINTING
    ),
]


def given(ctx: typer.Context, name: str) -> bool:
    """Whether the parameter `name` came from the command line or the environment, not from its default."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def resolve_backend(ctx: typer.Context, backend: str | None, artifacts: Path | None) -> str:
    """The backend to run: the given one, else onnxruntime (on --artifacts DIR, or on the engine cache's
    folder for the chosen weights). A one-line error for an option given on the command line that the
    chosen backend does not read."""
    from clipsam.engine.backends import backend_info

    chosen = backend or "onnxruntime"
    info = backend_info(chosen)  # a known name, or the one-line error listing them
    if not info.needs_artifacts:
        if artifacts is not None:
            raise ClipsamError(
                "--artifacts is for exported backends (onnxruntime, openvino, tensorrt), not --backend torch"
            )
        if given(ctx, "providers"):
            raise ClipsamError(
                "--providers does not apply to --backend torch (it picks onnxruntime's execution "
                "providers): drop it, or run the engine (no --backend)"
            )
        return chosen
    if artifacts is None:  # the engine cache: the weight options choose the engine's weights
        if given(ctx, "providers") and given(ctx, "device") and not ctx.params.get("use_inpainting"):
            raise ClipsamError("give --providers or --device, not both")
        return chosen
    for name, flag in TORCH_ONLY.items():
        if not given(ctx, name):
            continue
        if name == "device" and ctx.params.get("use_inpainting"):
            continue  # --device then places the inpainting model
        raise ClipsamError(
            f"{flag} does not apply to --artifacts: the artifacts hold their own weights and "
            f"{chosen} picks its device; drop {flag}, or drop --artifacts to run the engine of the "
            "weights you name"
        )
    return chosen


def engine_providers(device: str, providers: str) -> str:
    """onnxruntime providers for the engine from --device (auto: the preferred available ones; cpu; cuda)
    when --providers is not given."""
    if providers != "auto" or device == "auto":
        return providers
    if device == "cpu":
        return "CPUExecutionProvider"
    if device == "cuda" or device.startswith("cuda:"):
        return "CUDAExecutionProvider,CPUExecutionProvider"
    raise ClipsamError(f"unknown --device '{device}'; use auto, cpu or cuda")


def check_artifacts_model(models: dict, sam_name: str) -> None:
    """A one-line error when --sam-model names another SAM2 than the artifacts hold (models: the pipeline's
    "models" record, {"sam2": {"name": ...}, ...})."""
    held = (models.get("sam2") or {}).get("name")
    if held is not None and held != sam_name:
        raise ClipsamError(
            f"--sam-model {sam_name} asked for, but the artifacts hold {held}: export {sam_name} "
            f"(`clipsam export --model sclip-vit-b16 --model {sam_name}`) or drop --sam-model"
        )
