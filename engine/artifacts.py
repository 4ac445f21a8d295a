"""A Pipeline built only from exported artifacts (no export code, no torch)."""

from __future__ import annotations

import os
from pathlib import Path

from clipsam.engine.backends.ort_stages import GraphSam2, GraphSclip
from clipsam.engine.errors import ClipsamError
from clipsam.engine.fast_mode import PrecisionPlan, plan_precision
from clipsam.engine.manifest import (
    FAST_DECODER_GRAPHS,
    MODEL_GRAPHS,
    Manifest,
    check_precision,
    read_manifest,
)
from clipsam.engine.pipeline import Pipeline
from clipsam.engine.text_bank import TextBank

BACKENDS = ("onnxruntime", "openvino", "tensorrt")
DECODERS = ("auto", "fast", "faithful")
MAX_DECODER_WORKERS = 8
WORKER_CHUNK_SIZE = 2  # prompts per decoder call in each single-threaded worker (benchmarks/README.md)


def pipeline_from_artifacts(
    directory: Path | str,
    backend: str = "onnxruntime",
    providers: str = "auto",
    decoder: str = "auto",
    precision: str = "exact",
    fast_mechanism: str = "auto",
) -> Pipeline:
    """Load DIR's manifest, verify its graphs, and compose its models on the chosen runtime.

    A folder exported with `--only sam2` gives a Pipeline without SCLIP (for `Pipeline.segment_with_prompts`),
    one exported with `--only sclip` a Pipeline without SAM2 (for `Pipeline.dense_map`).

    decoder: "fast" (the rewritten decoder, same function), "faithful" (sam2's structure), or "auto" (fast
    when the artifacts have it). precision: "exact" (fp32 everywhere) or "fast": reduced precision chosen
    from the CPU's flags (engine/fast_mode.py: bf16 encoders on OpenVINO where the CPU has native bf16, else
    the int8 SAM2 encoder copy of `clipsam export --int8`); fast_mechanism "bf16" / "int8" forces one.
    """
    if decoder not in DECODERS:
        raise ClipsamError(f"unknown decoder '{decoder}'; choose one of: {', '.join(DECODERS)}")
    if backend not in BACKENDS:
        raise ClipsamError(f"unknown artifact backend '{backend}'; choose one of: {', '.join(BACKENDS)}")
    check_precision(precision, backend)
    plan = plan_precision(precision, backend, fast_mechanism)
    manifest = read_manifest(directory)
    roles = _graph_roles(manifest, backend, decoder, plan)
    loaded = _load_graphs(manifest, backend, providers, tuple(roles.values()), plan.bf16_graphs)
    graphs = {role: loaded[name] for role, name in roles.items()}
    return Pipeline(
        _dense_stage(manifest, graphs),
        _mask_stage(graphs, _decoder_workers(backend, graphs)) if manifest.has_model("sam2") else None,
        models=_models_record(manifest, backend, graphs, plan),
        random_weights=manifest.random_weights,
    )


def _dense_stage(manifest: Manifest, graphs: dict) -> GraphSclip | None:
    """SCLIP's tower with the folder's text features, or None for a folder exported with --only sam2."""
    if not manifest.has_model("sclip"):
        return None
    return GraphSclip(
        graphs["sclip_tower"],
        TextBank(manifest.text_dir),
        manifest.clip_weights_id,
        int(manifest.graph("sclip_tower")["patch_size"]),
        export_hint=f"add them with `clipsam export-text {manifest.directory} --vocabulary WORD …`",
    )


def _graph_roles(manifest: Manifest, backend: str, decoder: str, plan: PrecisionPlan) -> dict[str, str]:
    """{role: manifest graph name} of the graphs this pipeline runs; only those are loaded."""
    has_fast = manifest.has_model("sam2") and manifest.has_graphs(FAST_DECODER_GRAPHS)
    if backend == "tensorrt":  # the fast decoder runs there only once its engines are built
        built = manifest.data.get("engines", {}).get("graphs", {})
        has_fast = has_fast and all(name in built for name in FAST_DECODER_GRAPHS)
    if decoder == "fast" and not has_fast:
        raise ClipsamError(
            f"'{manifest.directory}' has no fast decoder graphs: re-export with `clipsam export`"
        )
    use_fast = has_fast and decoder != "faithful"
    names = MODEL_GRAPHS["sclip"] if manifest.has_model("sclip") else ()
    if manifest.has_model("sam2"):
        names += ("sam2_encoder", *(FAST_DECODER_GRAPHS if use_fast else ("sam2_decoder",)))
    roles = {name: name for name in names}
    if plan.int8_graphs:
        if not manifest.has_graphs(tuple(plan.int8_graphs.values())):
            raise ClipsamError(
                f"'{manifest.directory}' has no int8 graphs for --precision fast on this CPU "
                f"({plan.capability}): re-export with `clipsam export --int8`"
            )
        roles.update({role: name for role, name in plan.int8_graphs.items() if role in roles})
    return roles


def _load_graphs(
    manifest: Manifest, backend: str, providers: str, names: tuple[str, ...], bf16: tuple[str, ...] = ()
) -> dict:
    """{graph name: Backend} for `names`; those in `bf16` run on OpenVINO at bf16, the rest on `backend`."""
    if bf16:
        from clipsam.engine.backends.openvino import OvGraph

        rest = tuple(name for name in names if name not in bf16)
        low = {name: OvGraph(manifest.graph_path(name), "bf16") for name in names if name in bf16}
        return {**low, **_load_graphs(manifest, backend, providers, rest)}
    if backend == "tensorrt":
        from clipsam.engine.backends.tensorrt import tensorrt_graphs

        return tensorrt_graphs(manifest, names)
    if backend == "openvino":
        from clipsam.engine.backends.openvino import OvGraph

        # fp32, pinned: OpenVINO's own default on bf16-capable CPUs is bf16, which would break exact parity.
        return {name: OvGraph(manifest.graph_path(name), "fp32") for name in names}
    from clipsam.engine.backends.onnxruntime import OrtGraph, choose_providers

    chosen = choose_providers(providers)
    return {name: OrtGraph(manifest.graph_path(name), chosen) for name in names}


def _decoder_workers(backend: str, graphs: dict) -> list:
    decoder = graphs.get("sam2_decoder") or graphs.get("sam2_fast_decoder")
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


def _models_record(manifest: Manifest, backend: str, graphs: dict, plan: PrecisionPlan) -> dict:
    """The JSON's "models": one entry per model in the folder ("clip" / "sam2": name, weights,
    random_weights), then how they run."""
    models = manifest.data["models"]
    record = {
        key: {
            "name": models[model]["name"],
            "weights": models[model]["weights_id"],
            "random_weights": manifest.model_random(model),
        }
        for key, model in (("clip", "sclip"), ("sam2", "sam2"))
        if manifest.has_model(model)
    }
    any_graph = graphs.get("sam2_encoder") or graphs["sclip_tower"]
    record.update(backend=backend, providers=getattr(any_graph, "providers", [backend]))
    if manifest.has_model("sam2"):
        record["decoder"] = "faithful" if "sam2_decoder" in graphs else "fast"
    record.update(plan.record())
    record["artifacts"] = str(manifest.directory)
    return record
