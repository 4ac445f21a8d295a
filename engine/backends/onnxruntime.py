"""onnxruntime backend: one InferenceSession per exported graph (torch-free).

Execution providers are chosen TensorRT > CUDA > CPU among those onnxruntime offers on this machine, and the
choice is reported (`providers`), never silent.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import MappingProxyType

import numpy as np
import onnxruntime as ort

from clipsam.engine.backends.base import GraphSpecs, TensorSpec
from clipsam.engine.errors import ClipsamError
from clipsam.engine.manifest import Manifest

MAX_DECODER_WORKERS = 8
PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
_ORT_DTYPES = MappingProxyType(
    {
        "tensor(float)": "float32",
        "tensor(float16)": "float16",
        "tensor(int32)": "int32",
        "tensor(int64)": "int64",
        "tensor(bool)": "bool",
    }
)


def choose_providers(requested: str = "auto") -> list[str]:
    """Providers to use: "auto" = the preferred ones available, or a comma-separated explicit list."""
    available = ort.get_available_providers()
    if requested == "auto":
        return [p for p in PREFERRED_PROVIDERS if p in available] or ["CPUExecutionProvider"]
    wanted = [p.strip() for p in requested.split(",") if p.strip()]
    missing = [p for p in wanted if p not in available]
    if missing:
        raise ClipsamError(
            f"onnxruntime provider(s) {', '.join(missing)} not available here "
            f"(available: {', '.join(available)})"
        )
    return wanted


class OrtGraph(GraphSpecs):
    """An onnxruntime session behind the Backend protocol."""

    def __init__(self, path: Path, providers: list[str] | None = None, threads: int | None = None):
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), options, providers=providers or choose_providers())
        self._inputs = tuple(_spec(i) for i in self.session.get_inputs())
        self._outputs = tuple(_spec(o) for o in self.session.get_outputs())

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [spec.name for spec in self._outputs]
        return dict(zip(names, self.session.run(names, feeds), strict=True))


def _spec(node) -> TensorSpec:
    shape = tuple(dim if isinstance(dim, int) else str(dim) for dim in node.shape)
    return TensorSpec(node.name, shape, _ORT_DTYPES.get(node.type, node.type))


def load_graphs(manifest: Manifest, names: tuple[str, ...], providers: str = "auto") -> dict[str, OrtGraph]:
    """{graph name: OrtGraph} for the manifest's `names`, on the chosen execution providers."""
    chosen = choose_providers(providers)
    return {name: OrtGraph(manifest.graph_path(name), chosen) for name in names}


def decoder_workers(decoder: OrtGraph) -> list[OrtGraph]:
    """For a decoder on onnxruntime's CPU provider: one single-threaded session of its graph per core (at
    most MAX_DECODER_WORKERS), for GraphSam2's prompt parallelism; none on one core or on GPU providers
    (they take big chunks)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if decoder.providers != ["CPUExecutionProvider"] or cores < 2:
        return []
    return [
        OrtGraph(decoder.path, decoder.providers, threads=1) for _ in range(min(cores, MAX_DECODER_WORKERS))
    ]
