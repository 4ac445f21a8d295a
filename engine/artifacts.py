"""A Pipeline built only from exported artifacts (no export code, no torch)."""

from __future__ import annotations

from pathlib import Path

from clipsam.engine.backends.ort_stages import GraphSam2, GraphSclip
from clipsam.engine.errors import ClipsamError
from clipsam.engine.manifest import FAST_DECODER_GRAPHS, Manifest, read_manifest
from clipsam.engine.pipeline import Pipeline
from clipsam.engine.text_bank import TextBank

BACKENDS = ("onnxruntime", "openvino", "tensorrt")
DECODERS = ("auto", "fast", "faithful")


def pipeline_from_artifacts(
    directory: Path | str, backend: str = "onnxruntime", providers: str = "auto", decoder: str = "auto"
) -> Pipeline:
    """Load DIR's manifest, verify its graphs, and compose SCLIP + SAM2 on the chosen runtime.

    decoder: "fast" (the rewritten decoder, same function), "faithful" (sam2's structure), or "auto" (fast
    when the artifacts have it).
    """
    if decoder not in DECODERS:
        raise ClipsamError(f"unknown decoder '{decoder}'; choose one of: {', '.join(DECODERS)}")
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
    sam = _mask_stage(manifest, graphs, decoder)
    return Pipeline(
        sclip,
        sam,
        models=_models_record(manifest, backend, graphs, decoder),
        random_weights=manifest.random_weights,
    )


def _load_graphs(manifest: Manifest, backend: str, providers: str) -> dict:
    if backend == "tensorrt":
        from clipsam.engine.backends.tensorrt import tensorrt_graphs

        return tensorrt_graphs(manifest, manifest.graph_names)
    if backend == "openvino":
        from clipsam.engine.backends.openvino import OvGraph

        # fp32 (exact); bf16 is the fast mode on AMX / AVX512_BF16 CPUs, not wired into the CLI yet (issue 5).
        return {name: OvGraph(manifest.graph_path(name), "fp32") for name in manifest.graph_names}
    from clipsam.engine.backends.onnxruntime import OrtGraph, choose_providers

    chosen = choose_providers(providers)
    return {name: OrtGraph(manifest.graph_path(name), chosen) for name in manifest.graph_names}


def _mask_stage(manifest: Manifest, graphs: dict, decoder: str):
    has_fast = manifest.has_graphs(FAST_DECODER_GRAPHS)
    if decoder == "fast" and not has_fast:
        raise ClipsamError(
            f"'{manifest.directory}' has no fast decoder graphs: re-export with `clipsam export`"
        )
    if decoder == "faithful" or not has_fast:
        return GraphSam2(graphs["sam2_encoder"], graphs["sam2_decoder"])
    from clipsam.engine.backends.ort_fast_sam2 import GraphSam2Fast

    return GraphSam2Fast(graphs["sam2_encoder"], graphs["sam2_decoder_image"], graphs["sam2_fast_decoder"])


def _models_record(manifest: Manifest, backend: str, graphs: dict, decoder: str) -> dict:
    models = manifest.data["models"]
    return {
        "clip": {"name": models["sclip"]["name"], "weights": models["sclip"]["weights_id"]},
        "sam2": {"name": models["sam2"]["name"], "weights": models["sam2"]["weights_id"]},
        "backend": backend,
        "providers": getattr(graphs["sam2_decoder"], "providers", [backend]),
        "decoder": "fast"
        if manifest.has_graphs(FAST_DECODER_GRAPHS) and decoder != "faithful"
        else "faithful",
        "artifacts": str(manifest.directory),
    }
