"""The model zoo, for the export code: it lives in the torch-free runtime (engine/models/zoo.py)."""

from clipsam.engine.models.zoo import DEFAULT_CLIP, DEFAULT_SAM, MODELS, ModelSpec, get_model

__all__ = ["DEFAULT_CLIP", "DEFAULT_SAM", "MODELS", "ModelSpec", "get_model"]
