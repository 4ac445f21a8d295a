"""A Pipeline built only from exported artifacts (no export code, no torch)."""

from __future__ import annotations

import os
from pathlib import Path

from clipsam.engine.backends.ort_stages import GraphSam2, GraphSclip
from clipsam.engine.errors import ClipsamError
from clipsam.engine.manifest import (
    FAST_DECODER_GRAPHS,
    GRAPHS,
    INT8_GRAPHS,
    Manifest,
    check_precision,
    read_manifest,
)
from clipsam.engine.pipeline import Pipeline
from clipsam.engine.text_bank import TextBank

BACKENDS = ("onnxruntime", "openvino", "tensorrt")
DECODERS = ("auto", "fast", "faithful")
MAX_DECODER_WORKERS = 8
WORKER_CHUNK_SIZE = 2  # per worker; measured best of 1, 2, 4 on SAM2.1 tiny (2 workers, 2 cores)


def pipeline_from_artifacts(
    directory: Path | str,
    backend: str = "onnxruntime",
    providers: str = "auto",
    decoder: str = "auto",
    precision: str = "exact",
) -> Pipeline:
    """Load DIR's manifest, verify its graphs, and compose SCLIP + SAM2 on the chosen runtime.

    decoder: "fast" (the rewritten decoder, same function), "faithful" (sam2's structure), or "auto" (fast
    when the artifacts have it). precision: "exact" (fp32 everywhere) or "fast" (onnxruntime: the int8
    copy of the SAM2 encoder written by `clipsam export --int8`; SCLIP and the decoder stay fp32 because
    int8 cost them per-segment mask IoU, see export/quantize.py).
    """
    if decoder not in DECODERS:
        raise ClipsamError(f"unknown decoder '{decoder}'; choose one of: {', '.join(DECODERS)}")
    if backend not in BACKENDS:
        raise ClipsamError(f"unknown artifact backend '{backend}'; choose one of: {', '.join(BACKENDS)}")
    check_precision(precision, backend)
    manifest = read_manifest(directory)
    roles = _graph_roles(manifest, backend, decoder, precision)
    loaded = _load_graphs(manifest, backend, providers, tuple(roles.values()))
    graphs = {role: loaded[name] for role, name in roles.items()}
    sclip = GraphSclip(
        graphs["sclip_tower"],
        TextBank(manifest.text_dir),
        manifest.clip_weights_id,
        int(manifest.graph("sclip_tower")["patch_size"]),
        export_hint=f"add them with `clipsam export-text {manifest.directory} --vocabulary WORD …`",
    )
    sam = _mask_stage(graphs, _decoder_workers(backend, graphs))
    return Pipeline(
        sclip,
        sam,
        models=_models_record(manifest, backend, graphs, precision),
        random_weights=manifest.random_weights,
    )


def _graph_roles(manifest: Manifest, backend: str, decoder: str, precision: str) -> dict[str, str]:
    """{role: manifest graph name} of the graphs this pipeline runs; only those are loaded."""
    has_fast = manifest.has_graphs(FAST_DECODER_GRAPHS)
    if backend == "tensorrt":  # the fast decoder runs there only once its engines are built
        built = manifest.data.get("engines", {}).get("graphs", {})
        has_fast = has_fast and all(name in built for name in FAST_DECODER_GRAPHS)
    if decoder == "fast" and not has_fast:
        raise ClipsamError(
            f"'{manifest.directory}' has no fast decoder graphs: re-export with `clipsam export`"
        )
    use_fast = has_fast and decoder != "faithful"
    roles = {name: name for name in (*GRAPHS[:2], *(FAST_DECODER_GRAPHS if use_fast else GRAPHS[2:]))}
    if precision == "fast":
        if not manifest.has_graphs(tuple(INT8_GRAPHS.values())):
            raise ClipsamError(
                f"'{manifest.directory}' has no int8 graphs for --precision fast: "
                f"re-export with `clipsam export --int8`"
            )
        roles.update(INT8_GRAPHS)
    return roles


def _load_graphs(manifest: Manifest, backend: str, providers: str, names: tuple[str, ...]) -> dict:
    if backend == "tensorrt":
        from clipsam.engine.backends.tensorrt import tensorrt_graphs

        return tensorrt_graphs(manifest, names)
    if backend == "openvino":
        from clipsam.engine.backends.openvino import OvGraph

        # fp32 (exact); bf16 would be OpenVINO's fast mode on AMX / AVX512_BF16 CPUs, which this one lacks.
        return {name: OvGraph(manifest.graph_path(name), "fp32") for name in names}
    from clipsam.engine.backends.onnxruntime import OrtGraph, choose_providers

    chosen = choose_providers(providers)
    return {name: OrtGraph(manifest.graph_path(name), chosen) for name in names}


def _decoder_workers(backend: str, graphs: dict) -> list:
    decoder = graphs.get("sam2_decoder") or graphs["sam2_fast_decoder"]
    return cpu_decoder_workers(decoder) if backend == "onnxruntime" else []


def cpu_decoder_workers(decoder) -> list:
    """For an OrtGraph decoder on onnxruntime's CPU provider: one single-threaded session of its graph per
    core (at most MAX_DECODER_WORKERS), for GraphSam2's prompt parallelism (use chunks of
    WORKER_CHUNK_SIZE); none on one core or on GPU providers (they take big chunks)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if decoder.providers != ["CPUExecutionProvider"] or cores < 2:
        return []
    from clipsam.engine.backends.onnxruntime import OrtGraph

    count = min(cores, MAX_DECODER_WORKERS)
    return [OrtGraph(decoder.path, decoder.providers, threads=1) for _ in range(count)]


def _mask_stage(graphs: dict, workers: list):
    chunk = {"chunk_size": WORKER_CHUNK_SIZE, "workers": workers} if workers else {}
    if "sam2_decoder" in graphs:
        return GraphSam2(graphs["sam2_encoder"], graphs["sam2_decoder"], **chunk)
    from clipsam.engine.backends.ort_fast_sam2 import GraphSam2Fast

    fast = (graphs["sam2_encoder"], graphs["sam2_decoder_image"], graphs["sam2_fast_decoder"])
    return GraphSam2Fast(*fast, **chunk)


def _models_record(manifest: Manifest, backend: str, graphs: dict, precision: str) -> dict:
    models = manifest.data["models"]
    return {
        "clip": {"name": models["sclip"]["name"], "weights": models["sclip"]["weights_id"]},
        "sam2": {"name": models["sam2"]["name"], "weights": models["sam2"]["weights_id"]},
        "backend": backend,
        "providers": getattr(graphs["sam2_encoder"], "providers", [backend]),
        "decoder": "faithful" if "sam2_decoder" in graphs else "fast",
        "precision": "int8 SAM2 encoder, fp32 elsewhere" if precision == "fast" else "fp32",
        "artifacts": str(manifest.directory),
    }
