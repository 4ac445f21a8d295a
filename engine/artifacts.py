"""A Pipeline built only from exported artifacts (no export code, no torch), on a registered graph backend."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from clipsam.engine.backends import BackendInfo
from clipsam.engine.backends.graph_stages import BankTextEncoder, GraphCropEncoder, GraphSam2, GraphSam2Fast
from clipsam.engine.dense_clip import SclipStage
from clipsam.engine.errors import ClipsamError
from clipsam.engine.manifest import FAST_DECODER_GRAPHS, MODEL_GRAPHS, REGIONS_GRAPH, Manifest, read_manifest
from clipsam.engine.models.engines import CachedEngine, runtime_cache_dir
from clipsam.engine.pipeline import Pipeline
from clipsam.engine.precision import PrecisionPlan, plan_precision
from clipsam.engine.text.bank import TextBank
from clipsam.engine.text.encoder import text_encoder_from_manifest
from clipsam.kernels import warm_kernels_in_background

DECODERS = ("auto", "fast", "faithful")
WORKER_CHUNK_SIZE = 2  # prompts per decoder call in each single-threaded worker (benchmarks/README.md)


def pipeline_from_artifacts(
    directory: Path | str,
    info: BackendInfo,
    runtime: ModuleType,
    *,
    providers: str = "auto",
    decoder: str = "auto",
    precision: str = "exact",
    fast_mechanism: str = "auto",
    engine: CachedEngine | None = None,
) -> Pipeline:
    """Load DIR's manifest, verify its graphs, and compose its models on `runtime` (info's module).

    A folder exported with `--only sam2` gives a Pipeline without SCLIP (for `Pipeline.segment_with_prompts`),
    one exported with `--only sclip` a Pipeline without SAM2 (for `Pipeline.dense`).

    decoder: "fast" (the rewritten decoder, same function), "faithful" (sam2's structure), or "auto" (fast
    when the artifacts have it). precision: "exact" (fp32 everywhere) or "fast": reduced precision chosen
    from the CPU's flags and the folder's graphs (engine/precision.py: the static int8 encoder copies on
    OpenVINO where the CPU has VNNI, bf16 encoders where it has native bf16, else the dynamic int8 SAM2
    encoder); fast_mechanism "int8-static" / "bf16" / "int8" forces one.
    engine: DIR is this engine of the cache: verified by the cache already (its files are unchanged since
    their last full check), and the runtimes keep their optimised graphs in its `optimized/` folder.
    """
    if decoder not in DECODERS:
        raise ClipsamError(f"unknown decoder '{decoder}'; choose one of: {', '.join(DECODERS)}")
    warming = warm_kernels_in_background()  # numba's first load overlaps the sessions' creation
    manifest = read_manifest(directory, check_files=engine is None)
    plan = plan_precision(precision, info.name, fast_mechanism, graphs=manifest.graph_names)
    roles = _graph_roles(manifest, info.name, decoder, plan)
    on_openvino = {roles[role]: inner for role, inner in plan.openvino.items() if role in roles}
    cache = runtime_cache_dir(engine.path) if engine is not None else None
    loaded = _load_graphs(manifest, runtime, providers, tuple(roles.values()), on_openvino, cache)
    graphs = {role: loaded[name] for role, name in roles.items()}
    models = _models_record(manifest, info.name, graphs, plan)
    if engine is not None:
        models["engine"] = engine.key
    warming.join()  # loaded means warm: no stage pays numba's first load, and none runs beside it

    def load_regions_tower():  # issue 26's accuracy mode: loaded on its first use only
        return _load_graphs(manifest, runtime, providers, (REGIONS_GRAPH,), {}, cache)[REGIONS_GRAPH]

    return Pipeline(
        _dense_stage(manifest, graphs, load_regions_tower),
        _mask_stage(manifest, graphs, runtime, cache) if manifest.has_model("sam2") else None,
        models=models,
        random_weights=manifest.random_weights,
    )


def _dense_stage(manifest: Manifest, graphs: dict, load_regions_tower=None) -> SclipStage | None:
    """SCLIP's tower with the folder's text features, or None for a folder exported with --only sam2.
    load_regions_tower: loads the region tower (folders exported before issue 26 have none)."""
    if not manifest.has_model("sclip"):
        return None
    weights = manifest.clip_weights_id
    regions = load_regions_tower if manifest.has_graphs((REGIONS_GRAPH,)) else None
    patch_size = int(manifest.graph("sclip_tower")["patch_size"])
    crop = manifest.graph("sclip_tower").get("inputs", [{}])[0].get("shape", [None])[-1]
    crop = crop if isinstance(crop, int) else None  # the fixed crop side of the exported tower
    tower = GraphCropEncoder(
        graphs["sclip_tower"], weights, patch_size, regions_tower=regions, crop_size=crop
    )
    # Any word through the text graph when the folder has one; older folders know their exported words only.
    texts = text_encoder_from_manifest(manifest, _load_on_cpu(manifest)) or BankTextEncoder(
        TextBank(manifest.text_dir),
        weights,
        export_hint=f"add them with `clipsam export-text {manifest.directory} --vocabulary WORD …`",
    )
    return SclipStage(tower, texts)


def _load_on_cpu(manifest: Manifest):
    """The text graph runs on onnxruntime's CPU provider whatever the backend: it only runs for words
    no cache holds yet, and no TensorRT engine is built for it."""

    def load(name: str):
        from clipsam.engine.backends.onnxruntime import OrtGraph

        return OrtGraph(manifest.graph_path(name), ["CPUExecutionProvider"])

    return load


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
    copies = {role: name for role, name in plan.copies.items() if role in roles}
    if not manifest.has_graphs(tuple(copies.values())):
        raise ClipsamError(
            f"'{manifest.directory}' has no {plan.mechanism} graphs for --precision fast on this CPU "
            f"({plan.capability}): re-export with `clipsam export --int8`"
        )
    roles.update(copies)
    return roles


def _load_graphs(
    manifest: Manifest,
    runtime: ModuleType,
    providers: str,
    names: tuple[str, ...],
    on_openvino: dict,
    cache: Path | None,
) -> dict:
    """{graph name: Backend} for `names`; those in `on_openvino` ({name: precision}) run on OpenVINO at that
    inference precision, the rest on `runtime`. cache: where the runtimes keep optimised / compiled graphs
    (an engine's `optimized/` folder), or None."""
    graphs = {}
    if on_openvino:
        from clipsam.engine.backends.openvino import OvGraph

        graphs = {
            name: OvGraph(manifest.graph_path(name), on_openvino[name], cache_dir=cache)
            for name in names
            if name in on_openvino
        }
    rest = tuple(name for name in names if name not in graphs)
    return {**graphs, **(runtime.load_graphs(manifest, rest, providers, cache) if rest else {})}


def _mask_stage(manifest: Manifest, graphs: dict, runtime: ModuleType, cache: Path | None) -> GraphSam2:
    """SAM2 on the faithful or the fast decoder; decoder workers where the runtime offers them."""
    decoder = graphs.get("sam2_decoder") or graphs["sam2_fast_decoder"]
    workers = runtime.decoder_workers(decoder, cache) if hasattr(runtime, "decoder_workers") else []
    form = "faithful" if "sam2_decoder" in graphs else "fast"
    sam2 = manifest.data["models"]["sam2"]
    options = {"model_id": f"{sam2['name']}:{sam2['weights_id']}:{form}"}
    if workers:
        options.update(chunk_size=WORKER_CHUNK_SIZE, workers=workers)
    if form == "faithful":
        return GraphSam2(graphs["sam2_encoder"], decoder, **options)
    return GraphSam2Fast(graphs["sam2_encoder"], graphs["sam2_decoder_image"], decoder, **options)


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
