"""Turning the model options shared by `segment`, `dense` and `demo` into a ModelChoice."""

from __future__ import annotations

from pathlib import Path

from clipsam.engine.errors import CheckpointError, ClipsamError
from clipsam.engine.model_choice import ModelChoice
from clipsam.export.registry import DEFAULT_CLIP, MODELS, get_model

__all__ = ["ModelChoice", "get_model"]

BACKENDS = ("torch", "onnxruntime", "openvino", "tensorrt")


def check_backend(backend: str, artifacts: Path | None = None) -> None:
    if backend not in BACKENDS:
        raise ClipsamError(f"unknown backend '{backend}'; choose one of: {', '.join(BACKENDS)}")
    if backend != "torch" and artifacts is None:
        raise ClipsamError(
            f"--backend {backend} runs exported artifacts: pass --artifacts DIR (see `clipsam export`)"
        )
    if backend == "torch" and artifacts is not None:
        raise ClipsamError("--artifacts is for exported backends: add --backend onnxruntime")


def sam_name_from_cfg(model_cfg: str) -> str:
    """The registry name of a SAM2 hydra config path such as configs/sam2.1/sam2.1_hiera_t.yaml."""
    for spec in MODELS.values():
        if spec.family == "sam2" and (model_cfg == spec.arch or Path(model_cfg).name == Path(spec.arch).name):
            return spec.name
    known = ", ".join(s.arch for s in MODELS.values() if s.family == "sam2")
    raise ClipsamError(f"unknown --model-cfg '{model_cfg}'; choose one of: {known}")


def default_checkpoint(name: str) -> Path:
    from clipsam.export.download import checkpoint_path

    return checkpoint_path(get_model(name))


def require_checkpoint(explicit: Path | None, name: str, what: str) -> Path:
    """The explicit checkpoint, else the model's file in the checkpoints folder; a clear error when absent."""
    path = explicit or default_checkpoint(name)
    if explicit is None and not path.is_file():
        raise CheckpointError(
            f"no {what} checkpoint at '{path}': run `clipsam download {name}`, pass the file, "
            "or use --random-weights"
        )
    return path


def available_or_random(explicit: Path | None, name: str) -> tuple[Path | None, bool]:
    """For the demo: the checkpoint when present, else (None, random=True)."""
    path = explicit or default_checkpoint(name)
    return (path, False) if path.is_file() or explicit is not None else (None, True)


CLIP_NAME = DEFAULT_CLIP
