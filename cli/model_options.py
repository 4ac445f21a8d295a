"""Turning the model options shared by `segment`, `dense` and `demo` into a ModelChoice."""

from __future__ import annotations

from pathlib import Path

from clipsam.engine.errors import CheckpointError, ClipsamError
from clipsam.engine.models.choice import DEFAULT_SAM, ModelChoice
from clipsam.engine.models.zoo import DEFAULT_CLIP, MODELS, checkpoint_path, get_model

__all__ = ["DEFAULT_SAM", "ModelChoice", "get_model"]


def sam_name_from_cfg(model_cfg: str) -> str:
    """The registry name of a SAM2 hydra config path such as configs/sam2.1/sam2.1_hiera_t.yaml."""
    for spec in MODELS.values():
        if spec.family == "sam2" and (model_cfg == spec.arch or Path(model_cfg).name == Path(spec.arch).name):
            return spec.name
    known = ", ".join(s.arch for s in MODELS.values() if s.family == "sam2")
    raise ClipsamError(f"unknown --model-cfg '{model_cfg}'; choose one of: {known}")


def sam_name(sam_model: str, model_cfg: str | None, sam_model_given: bool) -> str:
    """The SAM2 registry name from --sam-model or the original's --model-cfg; an error when both are given
    and name different models."""
    from_model = get_model(sam_model, "sam2").name
    if model_cfg is None:
        return from_model
    from_cfg = sam_name_from_cfg(model_cfg)
    if sam_model_given and from_cfg != from_model:
        raise ClipsamError(
            f"--model-cfg {model_cfg} is {from_cfg}, but --sam-model says {from_model}: give one of them"
        )
    return from_cfg


def default_checkpoint(name: str) -> Path:
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


def checkpoint_or_random(
    explicit: Path | None, name: str, what: str, random_weights: bool
) -> tuple[Path | None, bool]:
    """(checkpoint, random) of one model: the explicit file, else the model's file in the checkpoints
    folder, else with --random-weights seeded random weights (None, True); a one-line error otherwise.

    --random-weights thus stands in only where no weights exist: a checkpoint the user named or downloaded is
    always the one used, and the outputs say per model which weights are random.
    """
    if explicit is not None:
        return explicit, False
    path = default_checkpoint(name)
    if path.is_file():
        return path, False
    if random_weights:
        return None, True
    return require_checkpoint(None, name, what), False


def available_or_random(explicit: Path | None, name: str) -> tuple[Path | None, bool]:
    """For the demo: the checkpoint when present, else (None, random=True)."""
    path = explicit or default_checkpoint(name)
    return (path, False) if path.is_file() or explicit is not None else (None, True)


CLIP_NAME = DEFAULT_CLIP
