"""OpenVINO backend: one compiled CPU model per exported .onnx graph behind the Backend protocol; torch-free.

OpenVINO reads the same ONNX artifacts as onnxruntime. `precision` is the execution precision of the CPU
plugin: "fp32" runs every op in fp32; "bf16" lets the plugin run matmuls and convolutions in bf16 (softmax,
normalisations and reductions stay fp32), which only pays where the CPU executes bf16 natively (AMX or
AVX512_BF16, reported as "BF16" in the plugin's optimization capabilities). Asking for bf16 on a CPU without
it is an error, never a silent fp32 run: `fast_precision()` says which one this machine should use.
"fp32" is always requested explicitly: the plugin's own default on bf16-capable CPUs is bf16.
Its speed and agreement against onnxruntime: benchmarks/bench_precision.py, figures in benchmarks/README.md.
"""

from __future__ import annotations

import queue
from pathlib import Path
from types import MappingProxyType

import numpy as np

from clipsam.engine.backends.base import GraphSpecs, TensorSpec
from clipsam.engine.errors import ClipsamError
from clipsam.engine.manifest import Manifest

PRECISIONS = ("fp32", "bf16")
_OV_PRECISION = MappingProxyType({"fp32": "f32", "bf16": "bf16"})
_CAPABILITY = MappingProxyType({"bf16": "BF16"})


def _core():
    try:
        import openvino
    except ImportError as err:
        raise ClipsamError("the openvino backend needs OpenVINO: run `pip install openvino`") from err
    return openvino.Core()


def cpu_capabilities() -> tuple[str, ...]:
    """The CPU plugin's optimization capabilities on this machine, e.g. ("FP32", "INT8", "BF16")."""
    return tuple(_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def fast_precision() -> str:
    """The fastest precision this CPU runs natively: "bf16" with AMX / AVX512_BF16, else "fp32"."""
    return "bf16" if "BF16" in cpu_capabilities() else "fp32"


class OvGraph(GraphSpecs):
    """An OpenVINO CPU compiled model behind the Backend protocol.

    path: an exported .onnx graph. precision: "fp32" or "bf16" (raises ClipsamError where the CPU has no
    native bf16). threads: CPU threads for one inference (default: the plugin's choice, all cores).
    cache_dir: a folder for OpenVINO's compiled-model cache (an engine's `optimized/`), or None.
    """

    def __init__(
        self,
        path: Path | str,
        precision: str = "fp32",
        threads: int | None = None,
        cache_dir: Path | None = None,
    ):
        if precision not in PRECISIONS:
            raise ClipsamError(f"unknown precision '{precision}'; choose one of: {', '.join(PRECISIONS)}")
        core = _core()
        capability = _CAPABILITY.get(precision)
        if capability and capability not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            raise ClipsamError(
                f"this CPU has no native {precision} (OpenVINO reports "
                f"{', '.join(core.get_property('CPU', 'OPTIMIZATION_CAPABILITIES'))}): use precision 'fp32'"
            )
        config = {"INFERENCE_PRECISION_HINT": _OV_PRECISION[precision], "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        if cache_dir is not None:  # OpenVINO's compiled-model cache (keyed by model, config and device)
            config["CACHE_DIR"] = str(Path(cache_dir) / "openvino")
        self.path = Path(path)
        self.requested_precision = precision
        self.compiled = core.compile_model(str(path), "CPU", config)
        # An infer request serves one call at a time: idle ones wait here, a concurrent call makes its own.
        self._idle_requests: queue.SimpleQueue = queue.SimpleQueue()
        self._inputs = tuple(_spec(port) for port in self.compiled.inputs)
        self._outputs = tuple(_spec(port) for port in self.compiled.outputs)

    @property
    def providers(self) -> list[str]:
        """What runs the graph, in the form OrtGraph reports it (recorded in the pipeline's models)."""
        return [f"OpenVINO CPU ({self.precision})"]

    @property
    def precision(self) -> str:
        """The execution precision the plugin applied ("f32" or "bf16")."""
        return self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Named numpy inputs → every output by name (fresh arrays, not views of the request's buffers)."""
        try:
            request = self._idle_requests.get_nowait()
        except queue.Empty:
            request = self.compiled.create_infer_request()
        try:
            results = request.infer({name: np.ascontiguousarray(value) for name, value in feeds.items()})
            return {
                spec.name: np.array(results[port])
                for spec, port in zip(self._outputs, self.compiled.outputs, strict=True)
            }
        finally:
            self._idle_requests.put(request)


def load_graphs(
    manifest: Manifest, names: tuple[str, ...], providers: str = "auto", cache_dir: Path | None = None
) -> dict[str, OvGraph]:
    """{graph name: OvGraph} at fp32, pinned: OpenVINO's own default on bf16-capable CPUs is bf16, which
    would break exact parity (bf16 is the fast mode's choice, engine/precision.py). cache_dir: OpenVINO's
    compiled-model cache, or None."""
    return {name: OvGraph(manifest.graph_path(name), "fp32", cache_dir=cache_dir) for name in names}


def _spec(port) -> TensorSpec:
    shape = tuple(
        dim.get_length() if dim.is_static else _symbolic_name(port, index)
        for index, dim in enumerate(port.get_partial_shape())
    )
    return TensorSpec(port.get_any_name(), shape, np.dtype(port.get_element_type().to_dtype()).name)


def _symbolic_name(port, index: int) -> str:
    # OpenVINO keeps no symbolic dimension names from the ONNX file: name them by position.
    return f"{port.get_any_name()}_dim{index}"
