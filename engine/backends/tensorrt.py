"""TensorRT backend: one deserialized engine per exported graph, behind the Backend protocol (torch-free).

Device memory and the CUDA stream go through cuda-python (`cuda.bindings.runtime`, or `cuda.cudart` in older
releases), not torch, so the runtime keeps its "no torch" rule. TensorRT and cuda-python are imported only
when a TrtGraph is built. Tensors are bound by name (TensorRT >= 8.6 API); one CUDA stream per graph; each
optimisation profile gets its own execution context, picked per call from the shapes of the inputs.

An engine is refused at load, in one line, when its file does not match the manifest or when it was built by
another TensorRT version or for another GPU than the one this process runs on (TensorRT engines are not
portable across either).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipsam.engine.backends.base import GraphSpecs, TensorSpec
from clipsam.engine.errors import ClipsamError
from clipsam.engine.manifest import Manifest, file_digest

GPU_INSTALL_HINT = "pip install '.[gpu]' on an NVIDIA machine"


class EngineMismatchError(ClipsamError):
    """A TensorRT engine does not belong to this TensorRT, this GPU, or this manifest."""


@dataclass(frozen=True)
class GpuIdentity:
    """What a TensorRT engine is specific to: the device's name and compute capability ("8.9")."""

    name: str
    compute_capability: str


def import_tensorrt():
    """The tensorrt module, or one-line ClipsamError saying how to install it."""
    try:
        import tensorrt
    except ImportError as err:
        raise ClipsamError(f"TensorRT is not installed ({GPU_INSTALL_HINT})") from err
    return tensorrt


def import_cudart():
    """cuda-python's runtime module (new and old import paths), or one-line ClipsamError."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError as err:
            raise ClipsamError(f"cuda-python is not installed ({GPU_INSTALL_HINT})") from err
    return cudart


def cuda_call(result):
    """Unpack a cuda-python (error, value...) tuple; raise on a CUDA error."""
    error, *values = result if isinstance(result, tuple) else (result,)
    if int(error) != 0:
        raise ClipsamError(f"CUDA call failed: {error}")
    return values[0] if len(values) == 1 else tuple(values)


def gpu_identity(cudart=None, device: int = 0) -> GpuIdentity:
    """Name and compute capability of CUDA device `device`."""
    cudart = cudart or import_cudart()
    props = cuda_call(cudart.cudaGetDeviceProperties(device))
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    return GpuIdentity(name.rstrip("\x00").strip(), f"{props.major}.{props.minor}")


def engine_entry(manifest: Manifest, graph: str) -> dict:
    """The manifest's record of `graph`'s engine merged with what all engines share (version, GPU)."""
    engines = manifest.data.get("engines")
    if not engines or graph not in engines.get("graphs", {}):
        raise ClipsamError(
            f"no TensorRT engine for {graph} in '{manifest.directory}': run `clipsam build-engine "
            f"{manifest.directory}` on this machine"
        )
    shared = {key: value for key, value in engines.items() if key != "graphs"}
    return {**shared, **engines["graphs"][graph]}


def check_engine_matches(entry: dict, tensorrt_version: str, gpu: GpuIdentity) -> None:
    """Refuse (EngineMismatchError, one line) an engine built by another TensorRT or for another GPU."""
    rebuild = "rebuild it with `clipsam build-engine DIR` on this machine"
    built_version = entry.get("tensorrt_version")
    if built_version != tensorrt_version:
        raise EngineMismatchError(
            f"engine {entry.get('file')} was built with TensorRT {built_version}, this is TensorRT "
            f"{tensorrt_version}: {rebuild}"
        )
    built_gpu = entry.get("gpu", {})
    if (built_gpu.get("name"), built_gpu.get("compute_capability")) != (gpu.name, gpu.compute_capability):
        raise EngineMismatchError(
            f"engine {entry.get('file')} was built for {built_gpu.get('name')} (sm "
            f"{built_gpu.get('compute_capability')}), this GPU is {gpu.name} (sm {gpu.compute_capability}): "
            f"{rebuild}"
        )


def check_engine_file(path: Path, entry: dict) -> None:
    """Refuse a missing, partial or foreign engine file (size and sha256 recorded at build)."""
    if not path.is_file():
        raise EngineMismatchError(
            f"engine file '{path}' is missing: run `clipsam build-engine {path.parent}`"
        )
    if path.stat().st_size != entry.get("bytes") or file_digest(path) != entry.get("sha256"):
        raise EngineMismatchError(
            f"engine file '{path}' does not match its manifest entry (changed or partial build): "
            f"run `clipsam build-engine {path.parent}`"
        )


def choose_profile(profiles: list[dict[str, list[list[int]]]], shapes: dict[str, tuple[int, ...]]) -> int:
    """Index of the optimisation profile covering `shapes`, preferring the one with the smallest max.

    profiles: per profile, {input name: [min shape, opt shape, max shape]} for its dynamic inputs.
    shapes: the shape of every input of this call. An engine without dynamic inputs has no profile: 0.
    """
    if not profiles:
        return 0
    fitting = [
        (int(np.prod([np.prod(bounds[2]) for bounds in profile.values()])), index)
        for index, profile in enumerate(profiles)
        if all(_within(shapes[name], bounds) for name, bounds in profile.items() if name in shapes)
    ]
    if not fitting:
        ranges = "; ".join(
            ", ".join(f"{name} {bounds[0]}..{bounds[2]}" for name, bounds in profile.items())
            for profile in profiles
        )
        given = ", ".join(f"{name} {list(shape)}" for name, shape in shapes.items())
        raise ClipsamError(
            f"input shapes ({given}) are outside every engine profile ({ranges}); split the batch"
        )
    return min(fitting)[1]


def _within(shape: tuple[int, ...], bounds: list[list[int]]) -> bool:
    low, _, high = bounds
    return len(shape) == len(low) and all(lo <= s <= hi for s, lo, hi in zip(shape, low, high, strict=True))


class TrtGraph(GraphSpecs):
    """A TensorRT engine behind the Backend protocol; numpy in, numpy out, device copies on one stream."""

    def __init__(self, engine_path: Path | str, manifest_entry: dict, device: int = 0):
        trt, self._cudart = import_tensorrt(), import_cudart()
        self.path = Path(engine_path)
        check_engine_file(self.path, manifest_entry)
        cuda_call(self._cudart.cudaSetDevice(device))
        check_engine_matches(manifest_entry, trt.__version__, gpu_identity(self._cudart, device))
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise EngineMismatchError(f"TensorRT could not deserialize '{self.path}': rebuild it")
        self._profiles = manifest_entry["profiles"]
        self._stream = cuda_call(self._cudart.cudaStreamCreate())
        self._contexts: dict[int, object] = {}
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)
        self._inputs, self._outputs = _io_specs(trt, self.engine, manifest_entry)
        # One stream, contexts and device buffers per graph: one call at a time (concurrent callers wait).
        self._lock = threading.Lock()

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Copy feeds to the device, run the engine on the profile that fits, copy every output back."""
        with self._lock:
            return self._run(feeds)

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        hosts = {spec.name: np.ascontiguousarray(feeds[spec.name], dtype=spec.dtype) for spec in self._inputs}
        context = self._context(choose_profile(self._profiles, {n: a.shape for n, a in hosts.items()}))
        for name, array in hosts.items():
            context.set_input_shape(name, array.shape)
            pointer = self._device_buffer(name, array.nbytes)
            self._copy(pointer, array.ctypes.data, array.nbytes, "cudaMemcpyHostToDevice")
            context.set_tensor_address(name, pointer)
        outputs = {}
        for spec in self._outputs:
            outputs[spec.name] = np.empty(tuple(context.get_tensor_shape(spec.name)), dtype=spec.dtype)
            context.set_tensor_address(spec.name, self._device_buffer(spec.name, outputs[spec.name].nbytes))
        if not context.execute_async_v3(int(self._stream)):
            raise ClipsamError(
                f"TensorRT execution of '{self.path.name}' failed (see the TensorRT log above)"
            )
        for name, array in outputs.items():
            self._copy(array.ctypes.data, self._buffers[name][0], array.nbytes, "cudaMemcpyDeviceToHost")
        cuda_call(self._cudart.cudaStreamSynchronize(self._stream))
        return outputs

    def close(self) -> None:
        """Free device buffers and the stream (also done at garbage collection)."""
        for pointer, _ in self._buffers.values():
            self._cudart.cudaFree(pointer)
        self._buffers.clear()
        if self._stream is not None:
            self._cudart.cudaStreamDestroy(self._stream)
            self._stream = None

    def __del__(self):
        if getattr(self, "_stream", None) is not None:
            self.close()

    def _context(self, profile: int):
        # A context is tied to one profile; keep one per profile rather than switching back and forth.
        if profile not in self._contexts:
            context = self.engine.create_execution_context()
            context.set_optimization_profile_async(profile, int(self._stream))
            self._contexts[profile] = context
        return self._contexts[profile]

    def _device_buffer(self, name: str, nbytes: int) -> int:
        pointer, capacity = self._buffers.get(name, (0, 0))
        if nbytes > capacity:  # grow only: later calls with fewer prompts reuse the buffer
            if pointer:
                cuda_call(self._cudart.cudaFree(pointer))
            pointer, capacity = cuda_call(self._cudart.cudaMalloc(max(nbytes, 1))), max(nbytes, 1)
            self._buffers[name] = (pointer, capacity)
        return pointer

    def _copy(self, destination: int, source: int, nbytes: int, kind: str) -> None:
        copy_kind = getattr(self._cudart.cudaMemcpyKind, kind)
        cuda_call(self._cudart.cudaMemcpyAsync(destination, source, nbytes, copy_kind, self._stream))


def _io_specs(trt, engine, entry: dict) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """Engine tensors by name; dynamic dims (-1) take their symbolic names from the manifest entry."""
    symbolic = {spec["name"]: spec["shape"] for spec in (*entry.get("inputs", []), *entry.get("outputs", []))}
    inputs, outputs = [], []
    for index in range(engine.num_io_tensors):
        name = engine.get_tensor_name(index)
        dims = list(engine.get_tensor_shape(name))
        named = symbolic.get(name, dims)
        shape = tuple(named[i] if d < 0 and i < len(named) else int(d) for i, d in enumerate(dims))
        spec = TensorSpec(name, shape, np.dtype(trt.nptype(engine.get_tensor_dtype(name))).name)
        (inputs if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outputs).append(spec)
    return tuple(inputs), tuple(outputs)


def load_graphs(
    manifest: Manifest, graphs: tuple[str, ...], providers: str = "auto", cache_dir: Path | None = None
) -> dict[str, TrtGraph]:
    """Load the engines of `graphs` recorded in the manifest (each checked against this TensorRT and GPU);
    `cache_dir` is unused (TensorRT engines are built ahead of time, `clipsam build-engine`)."""
    loaded = {}
    for name in graphs:
        entry = engine_entry(manifest, name)
        loaded[name] = TrtGraph(manifest.directory / entry["file"], entry)
    return loaded
