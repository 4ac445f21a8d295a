"""The pure PyTorch reference pipeline: SCLIP in torch, SAM2 through the `sam2` package, one call per prompt.

Every speedup of clipsam is quoted against this pipeline. Registered as the "torch" backend
(engine/backends/__init__.py): `clipsam.load_reference_pipeline` / `load_pipeline(backend="torch")` reach it.
"""

from __future__ import annotations

import torch

from clipsam.engine.dense_clip import SclipStage
from clipsam.engine.models.choice import DEFAULT_CLIP, ModelChoice
from clipsam.engine.pipeline import Pipeline
from clipsam.engine.text.bank import TextBank
from clipsam.export.clip_model import load_sclip
from clipsam.export.sam2_model import Sam2Model, build_sam2_model
from clipsam.reference.sam2_predictor import Sam2Reference
from clipsam.reference.sclip import TorchSclip


def resolve_device(device: str) -> str:
    """ "auto" → "cuda" when torch sees a GPU, else "cpu"."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load_torch_sclip(choice: ModelChoice, text_bank: TextBank | None = None) -> TorchSclip:
    model = load_sclip(choice.clip_checkpoint, random_weights=choice.clip_random, seed=choice.seed)
    return TorchSclip(model, text_bank, resolve_device(choice.device))


def load_sam2(choice: ModelChoice) -> Sam2Model:
    model = build_sam2_model(
        choice.sam_model, choice.sam_checkpoint, random_weights=choice.sam_random, seed=choice.seed
    )
    model.module.to(resolve_device(choice.device))
    return model


def load_pipeline(
    choice: ModelChoice, text_bank: TextBank | None = None, stages: tuple[str, ...] = ("dense", "masks")
) -> Pipeline:
    """SCLIP and / or SAM2 reference models as chosen (`stages`: "dense", "masks"), composed into a
    Pipeline whose "models" record says which weights are random."""
    models: dict = {}
    dense = masks = None
    if "dense" in stages:
        sclip = load_torch_sclip(choice, text_bank)
        dense = SclipStage(sclip, sclip)
        models["clip"] = {
            "name": DEFAULT_CLIP,
            "weights": sclip.weights_id,
            "random_weights": sclip.random_weights,
        }
    if "masks" in stages:
        sam = load_sam2(choice)
        masks = Sam2Reference(sam)
        models["sam2"] = {"name": sam.name, "weights": sam.weights_id, "random_weights": sam.random_weights}
    models["backend"] = "torch"
    random_weights = any(entry["random_weights"] for key, entry in models.items() if key != "backend")
    return Pipeline(dense, masks, models=models, random_weights=random_weights)
