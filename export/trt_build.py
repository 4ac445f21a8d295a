"""`clipsam build-engine`: TensorRT engines from an artifact folder's ONNX graphs, recorded in its manifest.

fp16 engines with LayerNorm and softmax kept in fp32 (fp16 LayerNorm overflows in Hiera-style encoders),
enforced with OBEY_PRECISION_CONSTRAINTS; one optimisation profile per graph from `TRT_PROFILES`; a timing
cache file shared across builds. The manifest gets an `engines` section (TensorRT version, GPU name and
compute capability, per-graph file, sha256 and profiles) that the tensorrt backend checks at load.

TensorRT is imported only inside `build_engines`; without it the command fails with one line.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import onnx

from clipsam.engine.backends.tensorrt import gpu_identity, import_cudart, import_tensorrt
from clipsam.engine.errors import ClipsamError
from clipsam.engine.image_io import atomic_output
from clipsam.engine.manifest import GRAPHS, file_digest, read_manifest, write_manifest
from clipsam.export.trt_readiness import TRT_PROFILES, DimRange, check_graph

TIMING_CACHE_NAME = "trt_timing.cache"
PRECISION = "fp16, LayerNorm and softmax in fp32 (OBEY_PRECISION_CONSTRAINTS)"
_FP32_OPS = ("LayerNormalization", "Softmax")
# A LayerNorm written out by hand (SAM2's LayerNorm2d) traces as ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt,
# Div under one module scope; a scope holding both ReduceMean and Sqrt is such a norm.
_DECOMPOSED_NORM_OPS = ("ReduceMean", "Sqrt")
_FP32_LAYER_TYPES = ("NORMALIZATION", "SOFTMAX")


def profile_shapes(
    inputs: list[dict], profiles: dict[str, DimRange] | None = None
) -> dict[str, list[list[int]]]:
    """{input name: [min shape, opt shape, max shape]} for every input with a symbolic dim.

    inputs: the manifest's input specs ({"name", "shape" (ints or dim names), "dtype"}).
    """
    profiles = TRT_PROFILES if profiles is None else profiles
    shapes = {}
    for spec in inputs:
        dims = spec["shape"]
        if all(isinstance(d, int) for d in dims):
            continue
        shapes[spec["name"]] = [
            [d if isinstance(d, int) else getattr(profiles[d], bound) for d in dims]
            for bound in ("min", "opt", "max")
        ]
    return shapes


def fp32_scopes(model: onnx.ModelProto) -> tuple[str, ...]:
    """ONNX node names and module scopes ("/a/b/") whose TensorRT layers must stay fp32.

    The parser names each layer after its ONNX node, so a layer is in a scope when its name starts with it.
    """
    scopes = {node.name for node in model.graph.node if node.op_type in _FP32_OPS}
    ops_by_scope: dict[str, set[str]] = {}
    for node in model.graph.node:
        ops_by_scope.setdefault(node.name.rsplit("/", 1)[0] + "/", set()).add(node.op_type)
    scopes |= {
        scope for scope, ops in ops_by_scope.items() if scope != "/" and set(_DECOMPOSED_NORM_OPS) <= ops
    }
    return tuple(sorted(scopes))


def keeps_fp32(layer_name: str, layer_type: str, scopes: tuple[str, ...]) -> bool:
    """Whether a TensorRT layer (name, type name such as "SOFTMAX") is forced to fp32."""
    return layer_type.rsplit(".", 1)[-1] in _FP32_LAYER_TYPES or layer_name.startswith(scopes)


def build_engines(
    directory: Path | str,
    *,
    graphs: tuple[str, ...] = GRAPHS,
    workspace_gib: float = 4.0,
    timing_cache: Path | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Build `graphs` of DIR into DIR/<graph>.engine and record them in the manifest; returns the section.

    Refuses graphs that fail the readiness check. Raises ClipsamError (one line) without TensorRT.
    """
    trt = import_tensorrt()
    manifest = read_manifest(directory)
    gpu = gpu_identity(import_cudart())
    cache_path = Path(timing_cache) if timing_cache else manifest.directory / TIMING_CACHE_NAME
    section = {
        "tensorrt_version": trt.__version__,
        "gpu": {"name": gpu.name, "compute_capability": gpu.compute_capability},
        "precision": PRECISION,
        "timing_cache": cache_path.name,
        "graphs": {},
    }
    for name in graphs:
        onnx_path = manifest.graph_path(name)
        readiness = check_graph(onnx_path, name)
        if not readiness.ready:
            raise ClipsamError(f"{name} is not TensorRT-ready: {readiness.problems[0].message}")
        start = time.perf_counter()
        entry = _build_one(trt, onnx_path, manifest.graph(name), cache_path, workspace_gib)
        entry["build_seconds"] = round(time.perf_counter() - start, 1)
        section["graphs"][name] = entry
        log(f"built {entry['file']} in {entry['build_seconds']:.0f} s, {entry['fp32_layers']} layers in fp32")
    # Re-read so the write keeps whatever the manifest holds now (and fails if the graphs changed meanwhile).
    data = read_manifest(directory).data
    data["engines"] = section
    write_manifest(manifest.directory, data)
    return section


def _build_one(trt, onnx_path: Path, graph: dict, cache_path: Path, workspace_gib: float) -> dict:
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i).desc()) for i in range(parser.num_errors))
        raise ClipsamError(f"TensorRT could not parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    config.set_flag(trt.BuilderFlag.FP16)
    config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    fp32_layers = _keep_norms_fp32(
        trt, network, fp32_scopes(onnx.load(str(onnx_path), load_external_data=False))
    )
    shapes = profile_shapes(graph["inputs"])
    if shapes:
        profile = builder.create_optimization_profile()
        for name, (low, opt, high) in shapes.items():
            profile.set_shape(name, low, opt, high)
        config.add_optimization_profile(profile)
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ClipsamError(f"TensorRT failed to build an engine from {onnx_path.name} (see the log above)")
    engine_path = onnx_path.with_suffix(".engine")
    with atomic_output(engine_path, "wb") as stream:
        stream.write(memoryview(serialized))
    with atomic_output(cache_path, "wb") as stream:
        stream.write(memoryview(config.get_timing_cache().serialize()))
    return {
        "file": engine_path.name,
        "bytes": engine_path.stat().st_size,
        "sha256": file_digest(engine_path),
        "onnx_sha256": graph["sha256"],
        "inputs": graph["inputs"],
        "outputs": graph["outputs"],
        "profiles": [shapes] if shapes else [],
        "fp32_layers": fp32_layers,
    }


def _network_flags(trt) -> int:
    # TensorRT 10 networks are always explicit-batch; the flag only exists (and is needed) before 10.
    if int(trt.__version__.split(".")[0]) >= 10:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)


def _keep_norms_fp32(trt, network, scopes: tuple[str, ...]) -> int:
    """Pin LayerNorm / softmax layers (and their float outputs) to fp32; returns how many were pinned."""
    pinned = 0
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        if not keeps_fp32(layer.name, str(layer.type), scopes):
            continue
        float_outputs = [i for i in range(layer.num_outputs) if layer.get_output(i).dtype == trt.float32]
        if not float_outputs:  # shape arithmetic inside a norm scope is int32 and has no precision to pin
            continue
        layer.precision = trt.float32
        for output in float_outputs:
            layer.set_output_type(output, trt.float32)
        pinned += 1
    return pinned
