"""The runtimes clipsam runs on, registered once: a backend is one module plus one line below.

A graph backend's module runs exported artifacts and defines
`load_graphs(manifest, names, providers) -> {graph name: Backend}` (engine/backends/base.py) and, optionally,
`decoder_workers(decoder_graph) -> [Backend]` (single-threaded decoder copies for prompt parallelism).
A backend without artifacts (the torch reference) defines `load_pipeline(choice, text_bank, stages)`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from clipsam.engine.errors import ClipsamError


@dataclass(frozen=True)
class BackendInfo:
    """name: the --backend value. module: where its loader lives, imported only when it is used.
    needs_artifacts: runs an export folder (else model checkpoints). precisions: what --precision it takes.
    takes_providers: it accepts --providers (onnxruntime execution providers). variants: bench / eval names
    "<name>-<variant>" (see engine/factory.py VARIANTS). summary: one line for --help."""

    name: str
    module: str
    summary: str
    needs_artifacts: bool = True
    precisions: tuple[str, ...] = ("exact",)
    takes_providers: bool = False
    variants: tuple[str, ...] = ()


BUILTIN_BACKENDS = (
    BackendInfo(
        "onnxruntime",
        "clipsam.engine.backends.onnxruntime",
        "exported ONNX graphs on onnxruntime (TensorRT > CUDA > CPU providers)",
        precisions=("exact", "fast"),
        takes_providers=True,
        variants=("faithful", "fast", "int8-static", "int8", "bf16"),
    ),
    BackendInfo(
        "openvino",
        "clipsam.engine.backends.openvino",
        "exported ONNX graphs on OpenVINO's CPU plugin",
        precisions=("exact", "fast"),
    ),
    BackendInfo(
        "tensorrt", "clipsam.engine.backends.tensorrt", "TensorRT engines built by `clipsam trt-build`"
    ),
    BackendInfo(
        "torch",
        "clipsam.reference.pipeline",
        "the pure PyTorch reference (SCLIP in torch, sam2's predictor one prompt at a time)",
        needs_artifacts=False,
    ),
)

REGISTRY: Mapping[str, BackendInfo] = MappingProxyType({info.name: info for info in BUILTIN_BACKENDS})
# "<backend>-<variant>" names (bench, eval): the load_pipeline options each variant sets.
VARIANTS: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {
        "faithful": MappingProxyType({"decoder": "faithful"}),
        "fast": MappingProxyType({"precision": "fast"}),
        "int8-static": MappingProxyType({"precision": "fast", "fast_mechanism": "int8-static"}),
        "int8": MappingProxyType({"precision": "fast", "fast_mechanism": "int8"}),
        "bf16": MappingProxyType({"precision": "fast", "fast_mechanism": "bf16"}),
    }
)


def backend_names() -> tuple[str, ...]:
    """Every registered backend, in registry order (the CLI's --backend choices)."""
    return tuple(REGISTRY)


def artifact_backends() -> tuple[str, ...]:
    return tuple(name for name, info in REGISTRY.items() if info.needs_artifacts)


def reference_backends() -> tuple[str, ...]:
    return tuple(name for name, info in REGISTRY.items() if not info.needs_artifacts)


def backend_info(name: str) -> BackendInfo:
    if name not in REGISTRY:
        raise ClipsamError(f"unknown backend '{name}'; choose one of: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def pipeline_names() -> tuple[str, ...]:
    """Backends and their variants ("onnxruntime", "onnxruntime-faithful", …): bench's and eval's names."""
    return tuple(
        name
        for info in REGISTRY.values()
        for name in (info.name, *(f"{info.name}-{variant}" for variant in info.variants))
    )


def resolve_pipeline_name(name: str) -> tuple[BackendInfo, dict[str, str]]:
    """ "onnxruntime-bf16" → (the onnxruntime entry, {"precision": "fast", "fast_mechanism": "bf16"})."""
    if name in REGISTRY:
        return REGISTRY[name], {}
    backend, _, variant = name.partition("-")  # backend names have no "-"; variants may
    if backend in REGISTRY and variant in REGISTRY[backend].variants:
        return REGISTRY[backend], dict(VARIANTS[variant])
    raise ClipsamError(f"unknown backend '{name}'; choose one of: {', '.join(pipeline_names())}")


def check_precision(backend: str, precision: str) -> None:
    """A one-line error unless `backend` (a registered name) runs `precision` ("exact" or "fast")."""
    known = tuple(dict.fromkeys(p for info in REGISTRY.values() for p in info.precisions))
    if precision not in known:
        raise ClipsamError(f"unknown precision '{precision}'; choose one of: {', '.join(known)}")
    if precision not in backend_info(backend).precisions:
        able = [name for name, info in REGISTRY.items() if precision in info.precisions]
        raise ClipsamError(
            f"--precision {precision} runs on the CPU backends ({', '.join(able)}), not {backend}: "
            f"use --backend {able[0]}"
        )
