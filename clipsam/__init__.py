"""clipsam: SCLIP dense maps turned into SAM2 prompts, run as exported artifacts.

    import clipsam
    pipeline = clipsam.load_pipeline(artifacts="artifacts/", backend="onnxruntime")
    vocabulary = clipsam.vocabulary_from_words(["car", "road", "sky"])
    result = pipeline.segment(image, vocabulary)  # image: uint8 [H, W, 3] RGB

The names below are the public API; everything else is internal. Importing clipsam loads numpy only: the
pipeline and its runtimes are imported on first use.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_PUBLIC = {
    "load_pipeline": "clipsam.engine.factory",
    "load_reference_pipeline": "clipsam.engine.factory",
    "backend_names": "clipsam.engine.factory",
    "Pipeline": "clipsam.engine.pipeline",
    "SegmentOptions": "clipsam.engine.pipeline",
    "StageTimer": "clipsam.engine.pipeline",
    "default_dense_config": "clipsam.engine.pipeline",
    "vocabulary_from_words": "clipsam.engine.pipeline",
    "DenseConfig": "clipsam.engine.dense_clip",
    "Vocabulary": "clipsam.engine.vocabulary",
    "ModelChoice": "clipsam.engine.models.choice",
    "ClipsamError": "clipsam.engine.errors",
    "TextFeatures": "clipsam.engine.types",
    "PatchFeatures": "clipsam.engine.types",
    "ImageEmbedding": "clipsam.engine.types",
    "DenseMap": "clipsam.engine.types",
    "Prompts": "clipsam.engine.types",
    "RleCandidates": "clipsam.engine.types",
    "MaskCandidates": "clipsam.engine.types",
    "Segment": "clipsam.engine.types",
    "SegmentationResult": "clipsam.engine.types",
    "load_image": "clipsam.engine.image_io",
    "result_to_json": "clipsam.engine.outputs",
    "Client": "clipsam.client",
}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    # Lazy: `import clipsam` (the CLI's entry point imports it) must not load the runtimes.
    if name not in _PUBLIC:
        raise AttributeError(f"module 'clipsam' has no attribute '{name}'")
    return getattr(importlib.import_module(_PUBLIC[name]), name)


def __dir__() -> list[str]:
    return sorted(__all__)
