"""A Pipeline built only from exported artifacts (no export code, no torch)."""

from __future__ import annotations

from pathlib import Path

from clipsam.engine.backends.ort_stages import GraphSam2, GraphSclip
from clipsam.engine.errors import ClipsamError
from clipsam.engine.manifest import Manifest, read_manifest
from clipsam.engine.pipeline import Pipeline
from clipsam.engine.text_bank import TextBank

BACKENDS = ("onnxruntime", "tensorrt")
GRAPH_NAMES = ("sclip_tower", "sam2_encoder", "sam2_decoder")


def pipeline_from_artifacts(
    directory: Path | str, backend: str = "onnxruntime", providers: str = "auto"
) -> Pipeline:
    """Load DIR's manifest, verify its graphs, and compose SCLIP + SAM2 on the chosen runtime."""
    if backend not in BACKENDS:
        raise ClipsamError(f"unknown artifact backend '{backend}'; choose one of: {', '.join(BACKENDS)}")
    manifest = read_manifest(directory)
    graphs = _load_graphs(manifest, backend, providers)
    sclip = GraphSclip(
        graphs["sclip_tower"],
        TextBank(manifest.text_dir),
        manifest.clip_weights_id,
        int(manifest.graph("sclip_tower")["patch_size"]),
        export_hint=f"add them with `clipsam export-text {manifest.directory} --vocabulary WORD …`",
    )
    sam = GraphSam2(graphs["sam2_encoder"], graphs["sam2_decoder"])
    return Pipeline(
        sclip, sam, models=_models_record(manifest, backend, graphs), random_weights=manifest.random_weights
    )


def _load_graphs(manifest: Manifest, backend: str, providers: str) -> dict:
    if backend == "tensorrt":
        from clipsam.engine.backends.tensorrt import tensorrt_graphs

        return tensorrt_graphs(manifest, GRAPH_NAMES)
    from clipsam.engine.backends.onnxruntime import OrtGraph, choose_providers

    chosen = choose_providers(providers)
    return {name: OrtGraph(manifest.graph_path(name), chosen) for name in GRAPH_NAMES}


def _models_record(manifest: Manifest, backend: str, graphs: dict) -> dict:
    models = manifest.data["models"]
    return {
        "clip": {"name": models["sclip"]["name"], "weights": models["sclip"]["weights_id"]},
        "sam2": {"name": models["sam2"]["name"], "weights": models["sam2"]["weights_id"]},
        "backend": backend,
        "providers": getattr(graphs["sam2_decoder"], "providers", [backend]),
        "artifacts": str(manifest.directory),
    }
