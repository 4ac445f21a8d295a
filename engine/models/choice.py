"""Which model weights a run uses (torch-free, so the CLI can decide before importing any model code)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_CLIP = "sclip-vit-b16"
DEFAULT_SAM = "sam2.1-hiera-tiny"


@dataclass(frozen=True)
class ModelChoice:
    """Which weights to run. A None checkpoint with random weights off is an error raised by the loaders."""

    clip_checkpoint: Path | None = None
    clip_random: bool = False
    sam_model: str = DEFAULT_SAM
    sam_checkpoint: Path | None = None
    sam_random: bool = False
    seed: int = 0
    device: str = "cpu"
