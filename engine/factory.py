"""One factory for every pipeline: `load_pipeline` reads the backend registry (engine/backends/__init__.py).

The factory imports a backend's module only when that backend is asked for, so the runtime core never imports
torch or the export code: the torch reference (clipsam.reference) is reached through its registry entry.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from clipsam.engine.backends import (  # noqa: F401  (the registry's queries, re-exported for callers)
    REGISTRY,
    VARIANTS,
    artifact_backends,
    backend_info,
    backend_names,
    check_precision,
    pipeline_names,
    resolve_pipeline_name,
)
from clipsam.engine.errors import ClipsamError
from clipsam.engine.models.choice import ModelChoice
from clipsam.engine.pipeline import Pipeline


def load_pipeline(
    artifacts: Path | str | None = None,
    backend: str = "onnxruntime",
    *,
    precision: str = "exact",
    providers: str = "auto",
    decoder: str = "auto",
    fast_mechanism: str = "auto",
    models: ModelChoice | None = None,
    text_bank=None,
    stages: tuple[str, ...] = ("dense", "masks"),
    log=None,
) -> Pipeline:
    """A Pipeline on `backend` (or a variant name such as "onnxruntime-faithful").

    artifacts: a `clipsam export` folder (graph backends); the folder decides which stages exist (`--only`).
        None: the engine cache's folder for `models` and `stages` (engine/models/engines.py), exported on
        first use (with --precision fast, with the int8 copies), progress on `log` (default: stderr).
    models: the weights (the torch reference, or the cached engine's), default: seeded random weights of the
        default models.
    precision: "exact" (fp32) or "fast" (reduced precision chosen from the CPU: engine/precision.py).
    providers: onnxruntime execution providers ("auto" or a comma-separated list).
    decoder: "auto" / "fast" / "faithful" (SAM2 decoder form of the exported graphs).
    fast_mechanism: "auto", or "int8-static" / "bf16" / "int8" to force one (bench compares them).
    text_bank: the torch reference's text-feature cache (None: the default cache folder).
    stages: which of "dense" (SCLIP) and "masks" (SAM2) to load (torch reference; eval's dense mode).
    """
    info, variant = resolve_pipeline_name(backend)
    options = {"precision": precision, "decoder": decoder, "fast_mechanism": fast_mechanism, **variant}
    check_precision(info.name, options["precision"])
    if providers != "auto" and not info.takes_providers:
        raise ClipsamError(f"--providers is for onnxruntime, not {info.name}")
    module = importlib.import_module(info.module)
    if not info.needs_artifacts:
        if artifacts is not None:
            raise ClipsamError(
                "--artifacts is for exported backends (onnxruntime, openvino, tensorrt), not --backend torch"
            )
        return module.load_pipeline(
            models or ModelChoice(clip_random=True, sam_random=True), text_bank, stages
        )
    from clipsam.engine.artifacts import pipeline_from_artifacts

    engine = None
    if artifacts is None:
        from clipsam.engine.models.engines import cached_engine

        choice = models or ModelChoice(clip_random=True, sam_random=True)
        engine = cached_engine(choice, int8=options["precision"] == "fast", stages=stages, log=log)
        artifacts = engine.path
    return pipeline_from_artifacts(artifacts, info, module, providers=providers, engine=engine, **options)


def load_reference_pipeline(
    models: ModelChoice | None = None, text_bank=None, stages: tuple[str, ...] = ("dense", "masks")
) -> Pipeline:
    """The pure PyTorch reference pipeline (every speedup is quoted against it), through the registry."""
    return load_pipeline(None, "torch", models=models, text_bank=text_bank, stages=stages)
