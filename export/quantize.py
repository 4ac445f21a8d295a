"""int8 copies of the exported graphs (onnxruntime dynamic quantisation) and their parity against fp32.

Dynamic quantisation stores the weights of MatMul / Gemm nodes as int8 and quantises their activations per
call (DynamicQuantizeLinear → MatMulInteger); every other op stays fp32. Convolutions are left alone on
purpose: ConvInteger has no fast CPU kernel in onnxruntime and is slower than the fp32 convolution.
Weights are stored unsigned (U8U8), which avoids the 16-bit saturation of U8S8 on CPUs without VNNI.
The fast mode uses this dynamic copy of the SAM2 encoder (manifest.INT8_GRAPHS) on CPUs without VNNI;
CPUs with VNNI run the calibrated static copies of export/quantize_static.py. The measurements behind both
choices are in benchmarks/README.md.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from clipsam.engine.outputs import new_file_mode

QUANTIZED_OPS = ("MatMul", "Gemm")
DYNAMIC_QUANTISATION = "onnxruntime dynamic, uint8 weights and activations, MatMul/Gemm only"


def quantize_graph(
    source: Path | str,
    target: Path | str,
    *,
    op_types: Sequence[str] = QUANTIZED_OPS,
    unsigned_weights: bool = False,
) -> Path:
    """Write an int8 dynamically quantised copy of the ONNX graph `source` to `target` (atomic).

    op_types: the node types whose weights become int8 (default MatMul and Gemm). unsigned_weights: uint8
    weights (U8U8) instead of int8 (U8S8); U8U8 avoids the 16-bit saturation of U8S8 on AVX2 without VNNI.
    Returns `target`.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)

    def write(temp_name: str) -> None:
        with quiet_logger():  # onnxruntime logs a pre-processing advice on the root logger
            quantize_dynamic(
                Path(source),
                Path(temp_name),
                op_types_to_quantize=list(op_types),
                weight_type=QuantType.QUInt8 if unsigned_weights else QuantType.QInt8,
            )

    return write_atomically(target, write)


def write_atomically(target: Path, write: Callable[[str], None]) -> Path:
    """Call write(temp path) for a hidden temp file beside `target`, then move it onto `target`: an
    interrupted write leaves no partial graph. Returns `target`."""
    handle, temp_name = tempfile.mkstemp(suffix=".onnx", dir=target.parent, prefix=f".{target.stem}.")
    os.close(handle)
    try:
        write(temp_name)
        os.chmod(temp_name, new_file_mode())  # mkstemp makes 0600; the umask decides, as for any file
        os.replace(temp_name, target)
    finally:
        Path(temp_name).unlink(missing_ok=True)
    return target


@contextlib.contextmanager
def quiet_logger(name: str = "") -> Iterator[None]:
    """Raise logger `name` (default: the root logger) to ERROR for the block."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def graph_parity(
    reference_path: Path | str, candidate_path: Path | str, feeds: Mapping[str, np.ndarray]
) -> dict[str, float]:
    """Max abs difference per output between two graphs with the same interface, run on onnxruntime CPU.

    feeds: the graphs' named inputs (numpy arrays of their declared dtypes). Returns {output name: float}.
    """
    import onnxruntime as ort

    outputs = {}
    for path in (reference_path, candidate_path):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [node.name for node in session.get_outputs()]
        outputs[str(path)] = dict(zip(names, session.run(names, dict(feeds)), strict=True))
    reference, candidate = outputs[str(reference_path)], outputs[str(candidate_path)]
    return {name: float(np.abs(candidate[name] - reference[name]).max()) for name in reference}


def quantize_artifact_graph(
    directory: Path | str, graph: str, feeds: Mapping[str, np.ndarray], suffix: str = "int8"
) -> dict:
    """Write DIR/<graph>.<suffix>.onnx (U8U8 dynamic int8) beside DIR/<graph>.onnx and describe it.

    Returns a manifest-style entry: {"file", "bytes", "sha256", "source_file", "quantization",
    "parity_max_abs": {output: float}} with parity measured on `feeds` against the fp32 graph.
    """
    source = Path(directory) / f"{graph}.onnx"
    target = Path(directory) / f"{graph}.{suffix}.onnx"
    parity = quantize_and_check(source, target, feeds, unsigned_weights=True)
    return copy_entry(
        source, target, "onnxruntime dynamic, uint8 weights and activations, MatMul/Gemm only", parity
    )


def copy_entry(source: Path, target: Path, quantization: str, parity: dict[str, float]) -> dict:
    """The manifest entry of `target`, a reduced-precision copy of the graph file `source`: {"file",
    "bytes", "sha256", "source_file", "quantization", "parity_max_abs"}."""
    from clipsam.engine.manifest import file_digest

    return {
        "file": target.name,
        "bytes": target.stat().st_size,
        "sha256": file_digest(target),
        "source_file": source.name,
        "quantization": quantization,
        "parity_max_abs": parity,
    }


def quantize_and_check(
    source: Path | str, target: Path | str, feeds: Mapping[str, np.ndarray], **options
) -> dict[str, float]:
    """quantize_graph(source, target, **options), then graph_parity(source, target, feeds)."""
    quantize_graph(source, target, **options)
    return graph_parity(source, target, feeds)


def parity_feeds(inputs: Sequence[Mapping], seed: int = 0, symbolic: int = 2) -> dict[str, np.ndarray]:
    """Seeded standard-normal float32 feeds for a manifest entry's `inputs` (symbolic dims = `symbolic`)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in inputs:
        if spec["dtype"] != "float32":
            raise ValueError(f"no parity feed for input {spec['name']} of type {spec['dtype']}")
        shape = [dim if isinstance(dim, int) else symbolic for dim in spec["shape"]]
        feeds[spec["name"]] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def add_int8_graphs(directory: Path | str, log=print) -> dict:
    """Write every int8 copy of `clipsam export --int8` in an exported folder and list them in its manifest:
    the dynamic copies of manifest.INT8_GRAPHS (the SAM2 encoder; parity on seeded noise) and the static
    copies of export/quantize_static.py, for the models the folder has.

    Each copy gets its own manifest entry (file, sha256, parity, the source's inputs and outputs); the
    manifest is read once and rewritten atomically last, so an interrupted run leaves the folder as it was.
    Returns the new entries.
    """
    from clipsam.engine.manifest import INT8_GRAPHS, read_manifest, write_manifest
    from clipsam.export.quantize_static import static_int8_entries

    manifest = read_manifest(directory)
    entries = {}
    for source, name in INT8_GRAPHS.items():
        if not manifest.has_graphs((source,)):
            continue
        spec = manifest.graph(source)
        entry = quantize_artifact_graph(manifest.directory, source, parity_feeds(spec["inputs"]))
        entries[name] = {**entry, "inputs": spec["inputs"], "outputs": spec["outputs"]}
        worst = max(entry["parity_max_abs"].values())
        log(f"quantised {source}.onnx → {entry['file']} (max abs vs fp32 on noise {worst:.3g})")
    entries.update(static_int8_entries(manifest, log))
    if entries:
        data = {**manifest.data, "graphs": {**manifest.data["graphs"], **entries}}
        write_manifest(manifest.directory, data)
    return entries
