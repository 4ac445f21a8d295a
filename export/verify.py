"""`clipsam verify DIR`: parity of the exported graphs with the torch modules they came from.

Two checks: (1) each graph on fresh random inputs against its torch module; (2) a real image from raw uint8
through each side's own preprocessing to the final masks (the numpy preprocessing of the runtime against the
`sam2` package's torch preprocessing), so preprocessing drift cannot hide.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from clipsam.engine.errors import CheckpointError
from clipsam.engine.manifest import Manifest
from clipsam.export.clip_model import SclipModel, load_sclip
from clipsam.export.sam2_model import Sam2Model, build_sam2_model

TOLERANCE_MAX_ABS = 1e-4
TOLERANCE_AGREEMENT = 0.9999
TOLERANCE_FAST_IOU = 0.999


@dataclass
class VerifyReport:
    """max_abs: output name → max abs error; agreement: low-res mask sign agreement per prompt [B];
    mask_iou: full-resolution mask IoU per prompt [B]; fast_mask_iou: the rewritten decoder's masks against
    the faithful graph's, per prompt (empty when the artifacts have no fast decoder)."""

    max_abs: dict[str, float] = field(default_factory=dict)
    agreement: np.ndarray = field(default_factory=lambda: np.zeros(0))
    mask_iou: np.ndarray = field(default_factory=lambda: np.zeros(0))
    fast_mask_iou: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def failures(self) -> list[str]:
        bad = [
            f"{k} max abs {v:.2e} > {TOLERANCE_MAX_ABS:g}"
            for k, v in self.max_abs.items()
            if v > TOLERANCE_MAX_ABS
        ]
        if self.agreement.size and self.agreement.min() < TOLERANCE_AGREEMENT:
            bad.append(f"mask sign agreement {self.agreement.min():.6f} < {TOLERANCE_AGREEMENT}")
        if self.fast_mask_iou.size and self.fast_mask_iou.min() < TOLERANCE_FAST_IOU:
            bad.append(f"fast decoder mask IoU {self.fast_mask_iou.min():.5f} < {TOLERANCE_FAST_IOU}")
        return bad


def torch_models_for(
    manifest: Manifest, *, clip_checkpoint: Path | None, sam_checkpoint: Path | None, need_sam: bool = True
) -> tuple[SclipModel | None, Sam2Model | None]:
    """Rebuild the torch modules an artifact folder was exported from (seeded random init, or checkpoints
    whose sha256 must equal the manifest's); None for a model the folder does not hold (`export --only`)."""
    models = manifest.data["models"]
    sclip = _rebuild_clip(models["sclip"], clip_checkpoint) if manifest.has_model("sclip") else None
    sam = _rebuild_sam(models["sam2"], sam_checkpoint) if need_sam and manifest.has_model("sam2") else None
    return sclip, sam


def _rebuild_clip(entry: dict, checkpoint: Path | None) -> SclipModel:
    if entry.get("seed") is not None:
        return load_sclip(None, random_weights=True, seed=int(entry["seed"]))
    model = load_sclip(_required(checkpoint, "--clip-checkpoint", entry))
    _same_weights(model.weights_id, entry, checkpoint)
    return model


def _rebuild_sam(entry: dict, checkpoint: Path | None) -> Sam2Model:
    if entry.get("seed") is not None:
        return build_sam2_model(entry["name"], random_weights=True, seed=int(entry["seed"]))
    model = build_sam2_model(entry["name"], _required(checkpoint, "--checkpoint", entry))
    _same_weights(model.weights_id, entry, checkpoint)
    return model


def _required(checkpoint: Path | None, flag: str, entry: dict) -> Path:
    if checkpoint is None:
        raise CheckpointError(
            f"the artifacts were exported from {entry['name']} weights {entry['weights']}: pass {flag}"
        )
    return checkpoint


def _same_weights(weights_id: str, entry: dict, checkpoint: Path | None) -> None:
    if weights_id != entry["weights_id"]:
        raise CheckpointError(
            f"checkpoint '{checkpoint}' (sha256 {weights_id[:12]}…) is not the one the artifacts were "
            f"exported from ({entry['weights']})"
        )


def max_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)))) if a.size else 0.0


def sign_agreement(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """float [B]: per prompt, the fraction of logits of [B, ...] with the same sign (> 0) in a and b."""
    same = (a > 0) == (b > 0)
    return same.reshape(same.shape[0], -1).mean(axis=1)


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """float [B]: IoU of bool masks [B, H, W] (1 when both are empty)."""
    inter = (a & b).reshape(a.shape[0], -1).sum(axis=1)
    union = (a | b).reshape(a.shape[0], -1).sum(axis=1)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def torch_inference(fn):
    """Run fn under torch.inference_mode (helper for the check modules)."""

    def wrapped(*args, **kwargs):
        with torch.inference_mode():
            return fn(*args, **kwargs)

    return wrapped
