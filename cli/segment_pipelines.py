"""The pipelines of `segment`, `dense` and `demo`: the weights chosen, then the torch reference or the
exported graphs (a folder given, else the engine cache's)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from clipsam.cli import model_options as mo
from clipsam.cli import segment_options as so
from clipsam.engine.errors import ClipsamError

stderr = Console(stderr=True, soft_wrap=True)


def resolve_torch_device(device: str) -> str:
    from clipsam.reference.pipeline import resolve_device

    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise ClipsamError(f"unknown --device '{device}'; use auto, cpu or cuda")
    resolved = resolve_device(device)
    if resolved.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ClipsamError("--device cuda asked for, but torch sees no CUDA GPU; use --device cpu")
    return resolved


def torch_device(backend: str, device: str) -> str:
    """The torch reference's device (--device resolved) with --backend torch; "cpu" (the weights' device
    for an export) on the engine."""
    return resolve_torch_device(device) if backend == "torch" else "cpu"


def model_choice(
    sam_name, sam_ckpt, clip_ckpt, random_weights, seed, device, with_clip: bool = True
) -> mo.ModelChoice:
    """Each model's named checkpoint, else its downloaded one, else (with --random-weights) random. device:
    the torch reference's ("auto" is resolved, which imports torch), or "cpu" for the engine's weights."""
    clip_path, clip_random = (None, False)
    if with_clip:
        clip_path, clip_random = mo.checkpoint_or_random(clip_ckpt, mo.CLIP_NAME, "CLIP", random_weights)
    sam_path, sam_random = mo.checkpoint_or_random(sam_ckpt, sam_name, "SAM2", random_weights)
    device = device if device == "cpu" else resolve_torch_device(device)
    return mo.ModelChoice(clip_path, clip_random, sam_name, sam_path, sam_random, seed, device)


def reference_pipeline(choice, stages: tuple[str, ...] = ("dense", "masks")):
    from clipsam.engine.factory import load_reference_pipeline

    return load_reference_pipeline(choice, stages=stages)


def artifact_pipeline(
    artifacts: Path | None,
    backend: str,
    providers: str,
    precision: str = "exact",
    sam_name: str | None = None,
    models: mo.ModelChoice | None = None,
    stages: tuple[str, ...] = ("dense", "masks"),
):
    """The pipeline on exported graphs: the folder given, else the engine cache's for `models` (built on
    first use, progress on stderr); with `sam_name` (--sam-model given), the artifacts must hold it."""
    from clipsam.engine.factory import load_pipeline

    pipeline = load_pipeline(
        artifacts,
        backend,
        providers=providers,
        precision=precision,
        models=models,
        stages=stages,
        log=lambda message: stderr.print(f"clipsam: {message}", highlight=False),
    )
    if sam_name is not None and artifacts is not None:
        so.check_artifacts_model(pipeline.models, sam_name)
    return pipeline


def pipeline_builder(backend, sam_name, asked_sam, artifacts, seed, device, engine, **weights):
    """A function that loads the run's pipeline: the torch reference, or the engine (the folder given, else
    the engine cache's for the chosen weights). The weights are chosen when it is called, after the inputs
    were checked (a missing image is reported before a missing checkpoint)."""
    checkpoint, clip_checkpoint, random_weights = (
        weights[k] for k in ("checkpoint", "clip_checkpoint", "random_weights")
    )

    def build():
        if backend == "torch":
            choice = model_choice(sam_name, checkpoint, clip_checkpoint, random_weights, seed, device)
            return reference_pipeline(choice)
        models = (
            None
            if artifacts
            else model_choice(sam_name, checkpoint, clip_checkpoint, random_weights, seed, "cpu")
        )
        return artifact_pipeline(artifacts, backend, sam_name=asked_sam, models=models, **engine)

    return build
