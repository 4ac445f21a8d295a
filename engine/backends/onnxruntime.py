"""onnxruntime backend: one InferenceSession per exported graph (torch-free).

Execution providers are chosen TensorRT > CUDA > CPU among those onnxruntime offers on this machine, and the
choice is reported (`providers`), never silent.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path
from types import MappingProxyType

import numpy as np
import onnxruntime as ort

from clipsam.engine.backends.base import GraphSpecs, TensorSpec
from clipsam.engine.errors import ClipsamError
from clipsam.engine.manifest import Manifest

MAX_DECODER_WORKERS = 8
OPTIMIZED_MODEL, OPTIMIZED_DATA = "model.onnx", "model.data"  # a saved optimised graph and its weights
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
    """An onnxruntime session behind the Backend protocol.

    optimized: a folder for onnxruntime's optimised form of this graph (CPU provider only), or None. The
    first session saves it there (weights as an external file, raw and pre-packed, written to a temp folder
    and renamed); later sessions load it with graph optimisation off and the packed weights as saved, which
    skips most of a session's creation time. The folder
    must be specific to this graph's content, the onnxruntime version and the CPU (`optimized_folder`).
    """

    def __init__(
        self,
        path: Path,
        providers: list[str] | None = None,
        threads: int | None = None,
        optimized: Path | None = None,
    ):
        self.path = Path(path)
        chosen = providers or choose_providers()
        self.optimized = optimized if chosen == ["CPUExecutionProvider"] else None
        self.session = _session(self.path, chosen, threads, self.optimized)
        self._inputs = tuple(_spec(i) for i in self.session.get_inputs())
        self._outputs = tuple(_spec(o) for o in self.session.get_outputs())

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [spec.name for spec in self._outputs]
        return dict(zip(names, self.session.run(names, feeds), strict=True))


def _options(threads: int | None, level) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    if threads:
        options.intra_op_num_threads = threads
    return options


def _session(path: Path, providers: list[str], threads: int | None, optimized: Path | None):
    """A session of `path`: from its saved optimised form in `optimized` when there is one, else optimised now
    (and saved there, when a folder is given)."""
    level = ort.GraphOptimizationLevel
    if optimized is None:
        return ort.InferenceSession(str(path), _options(threads, level.ORT_ENABLE_ALL), providers=providers)
    saved = optimized / OPTIMIZED_MODEL
    if saved.is_file():
        try:
            return ort.InferenceSession(
                str(saved), _options(threads, level.ORT_DISABLE_ALL), providers=providers
            )
        except (RuntimeError, ValueError, OSError):  # damaged by hand: rebuilt below
            shutil.rmtree(optimized, ignore_errors=True)
    temp = optimized.parent / f".tmp-{optimized.name}-{os.getpid()}-{threading.get_ident()}"
    temp.mkdir(parents=True, exist_ok=True)
    options = _options(threads, level.ORT_ENABLE_ALL)
    options.log_severity_level = 3  # its warning that the saved form is for this machine: it is keyed so
    options.optimized_model_filepath = str(temp / OPTIMIZED_MODEL)
    options.add_session_config_entry(
        "session.optimized_model_external_initializers_file_name", OPTIMIZED_DATA
    )
    options.add_session_config_entry(
        "session.optimized_model_external_initializers_min_size_in_bytes", "1024"
    )
    # the GEMM weights in MLAS's packed layout too: a later session maps them instead of packing again
    options.add_session_config_entry("session.save_external_prepacked_constant_initializers", "1")
    session = ort.InferenceSession(str(path), options, providers=providers)
    try:
        os.rename(temp, optimized)
    except OSError:  # another process saved it first, or the cache is read-only: this session is as good
        shutil.rmtree(temp, ignore_errors=True)
    return session


def optimized_folder(cache_dir: Path, graph: str, sha256: str) -> Path:
    """Where a graph's optimised form lives under a runtime cache: per onnxruntime version, CPU class and
    graph content (the saved form holds layout transforms for this CPU)."""
    from clipsam.engine.precision import this_capability_class

    return cache_dir / f"onnxruntime-{ort.__version__}-{this_capability_class()}" / f"{graph}-{sha256[:16]}"


def _spec(node) -> TensorSpec:
    shape = tuple(dim if isinstance(dim, int) else str(dim) for dim in node.shape)
    return TensorSpec(node.name, shape, _ORT_DTYPES.get(node.type, node.type))


def load_graphs(
    manifest: Manifest, names: tuple[str, ...], providers: str = "auto", cache_dir: Path | None = None
) -> dict[str, OrtGraph]:
    """{graph name: OrtGraph} for the manifest's `names`, on the chosen execution providers; with a
    `cache_dir`, each graph's optimised form is saved there once and loaded from there afterwards."""
    chosen = choose_providers(providers)

    def folder(name: str) -> Path | None:
        return optimized_folder(cache_dir, name, manifest.graph(name)["sha256"]) if cache_dir else None

    return {name: OrtGraph(manifest.graph_path(name), chosen, optimized=folder(name)) for name in names}


def decoder_workers(decoder: OrtGraph, cache_dir: Path | None = None) -> list[OrtGraph]:
    """For a decoder on onnxruntime's CPU provider: one single-threaded session of its graph per core (at
    most MAX_DECODER_WORKERS), for GraphSam2's prompt parallelism; none on one core or on GPU providers
    (they take big chunks)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if decoder.providers != ["CPUExecutionProvider"] or cores < 2:
        return []
    return [
        OrtGraph(decoder.path, decoder.providers, threads=1, optimized=decoder.optimized)
        for _ in range(min(cores, MAX_DECODER_WORKERS))
    ]
