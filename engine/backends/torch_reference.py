"""The pure PyTorch reference pipeline: SCLIP in torch, SAM2 through the `sam2` package, one call per prompt.

Every speedup of clipsam is quoted against this pipeline.
"""

from __future__ import annotations

import torch

from clipsam.engine.backends.torch_sam2 import Sam2Reference
from clipsam.engine.backends.torch_sclip import TorchSclip
from clipsam.engine.model_choice import ModelChoice
from clipsam.engine.pipeline import Pipeline
from clipsam.engine.text_bank import TextBank
from clipsam.export.clip_model import load_sclip
from clipsam.export.registry import DEFAULT_CLIP
from clipsam.export.sam2_model import Sam2Model, build_sam2_model


def resolve_device(device: str) -> str:
    """ "auto" → "cuda" when torch sees a GPU, else "cpu"."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load_dense_backend(choice: ModelChoice, text_bank: TextBank | None = None) -> TorchSclip:
    model = load_sclip(choice.clip_checkpoint, random_weights=choice.clip_random, seed=choice.seed)
    return TorchSclip(model, text_bank, choice.device)


def load_sam2(choice: ModelChoice) -> Sam2Model:
    model = build_sam2_model(
        choice.sam_model, choice.sam_checkpoint, random_weights=choice.sam_random, seed=choice.seed
    )
    model.module.to(choice.device)
    return model


def build_reference_pipeline(choice: ModelChoice, text_bank: TextBank | None = None) -> Pipeline:
    """SCLIP + SAM2 reference models as chosen, composed into a Pipeline."""
    dense = load_dense_backend(choice, text_bank)
    sam = load_sam2(choice)
    models = {
        "clip": {"name": DEFAULT_CLIP, "weights": dense.weights_id, "random_weights": dense.random_weights},
        "sam2": {"name": sam.name, "weights": sam.weights_id, "random_weights": sam.random_weights},
        "backend": "torch",
    }
    random_weights = dense.random_weights or sam.random_weights
    return Pipeline(dense, Sam2Reference(sam), models=models, random_weights=random_weights)
