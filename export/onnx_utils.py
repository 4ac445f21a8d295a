"""ONNX export helpers shared by every graph: atomic export, I/O specs, op census and forbidden-op checks."""

from __future__ import annotations

import os
import tempfile
import warnings
from collections import Counter
from pathlib import Path

import onnx
import torch

from clipsam.engine.outputs import new_file_mode

OPSET = 17

# Ops TensorRT's parser rejects or that betray a trace of data-dependent Python (see FACTS.md, export
# pitfalls): OneHot and Tile come from repeat_interleave with a traced count, If/Loop from Python branches
# and loops on tensor values, the DFT family from complex arithmetic.
FORBIDDEN_OPS = frozenset({"OneHot", "Tile", "If", "Loop", "Scan", "DFT", "STFT", "SequenceConstruct"})

_ONNX_DTYPES = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.BFLOAT16: "bfloat16",
    onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.BOOL: "bool",
    onnx.TensorProto.UINT8: "uint8",
}


def export_onnx(
    module: torch.nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    path: Path | str,
    *,
    input_names: list[str],
    output_names: list[str],
    dynamic_axes: dict[str, dict[int, str]] | None = None,
    opset: int = OPSET,
) -> Path:
    """Trace `module` to ONNX at `path`; written beside it first and renamed only once it checks out.

    Uses torch's TorchScript-based exporter (deterministic graphs without `If` for our trace-friendly
    wrappers); its deprecation warning is silenced here, once.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(
                module.eval(),
                example_inputs,
                tmp_name,
                dynamo=False,
                input_names=input_names,
                output_names=output_names,
                dynamic_axes=dynamic_axes or {},
                opset_version=opset,
                do_constant_folding=True,
            )
        pin_static_output_dims(tmp_name)
        onnx.checker.check_model(tmp_name)
        os.chmod(tmp_name, new_file_mode())  # mkstemp makes 0600; the umask decides, as for any file
        os.replace(tmp_name, path)
    finally:
        Path(tmp_name).unlink(missing_ok=True)
    return path


def pin_static_output_dims(path: Path | str) -> None:
    """Give the graph outputs the static sizes ONNX shape inference proves, in place.

    With a symbolic batch (or after some reshapes) torch's exporter names output dims it could not follow
    ("Addhigh_res_s1_dim_0") although they are constants; TensorRT profiles and the manifest need the numbers.
    """
    model = onnx.load(str(path))
    inferred = onnx.shape_inference.infer_shapes(model)
    for declared, resolved in zip(model.graph.output, inferred.graph.output, strict=True):
        pairs = zip(declared.type.tensor_type.shape.dim, resolved.type.tensor_type.shape.dim, strict=True)
        for dim, known in pairs:
            if known.HasField("dim_value"):
                dim.dim_value = known.dim_value  # clears the placeholder dim_param (a oneof)
    onnx.save(model, str(path))


def pin_output_dims_by_running(path: Path | str) -> None:
    """For a graph whose inputs are all static: write the output shapes observed in one onnxruntime run on
    zeros into the graph, in place (for dims torch's exporter and ONNX inference both leave symbolic)."""
    import numpy as np
    import onnxruntime as ort

    model = onnx.load(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {}
    for node in session.get_inputs():
        if not all(isinstance(dim, int) for dim in node.shape):
            raise ValueError(f"{path}: input {node.name} has a dynamic shape {node.shape}")
        dtype = np.int32 if node.type == "tensor(int32)" else np.float32
        feeds[node.name] = np.zeros(node.shape, dtype)
    outputs = session.run(None, feeds)
    for declared, value in zip(model.graph.output, outputs, strict=True):
        for dim, size in zip(declared.type.tensor_type.shape.dim, value.shape, strict=True):
            dim.dim_value = int(size)
    onnx.save(model, str(path))


def op_census(model: onnx.ModelProto | Path | str) -> dict[str, int]:
    """Count of every op type in the graph and its subgraphs."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    counts: Counter[str] = Counter()
    pending = [model.graph]
    while pending:
        graph = pending.pop()
        for node in graph.node:
            counts[node.op_type] += 1
            pending.extend(attr.g for attr in node.attribute if attr.type == onnx.AttributeProto.GRAPH)
            pending.extend(attr.graphs for attr in node.attribute if attr.type == onnx.AttributeProto.GRAPHS)
    return dict(sorted(counts.items()))


def forbidden_ops(census: dict[str, int]) -> list[str]:
    """The forbidden op types present in a census (empty when the graph is clean)."""
    return sorted(op for op in census if op in FORBIDDEN_OPS)


def graph_report(path: Path | str, export_seconds: float) -> dict:
    """What every exporter reports of the graph it wrote: "io_specs", "op_census", "forbidden_ops",
    "export_seconds" (rounded to 10 ms) and "opset"."""
    census = op_census(path)
    return {
        "io_specs": io_specs(path),
        "op_census": census,
        "forbidden_ops": forbidden_ops(census),
        "export_seconds": round(export_seconds, 2),
        "opset": OPSET,
    }


def io_specs(model: onnx.ModelProto | Path | str) -> dict[str, list[dict]]:
    """{"inputs": [...], "outputs": [...]}, each {"name", "shape" (ints or symbolic names), "dtype"}."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)

    def spec(value: onnx.ValueInfoProto) -> dict:
        tensor = value.type.tensor_type
        shape = [dim.dim_param if dim.dim_param else int(dim.dim_value) for dim in tensor.shape.dim]
        return {
            "name": value.name,
            "shape": shape,
            "dtype": _ONNX_DTYPES.get(tensor.elem_type, str(tensor.elem_type)),
        }

    initializers = {init.name for init in model.graph.initializer}
    return {
        "inputs": [spec(v) for v in model.graph.input if v.name not in initializers],
        "outputs": [spec(v) for v in model.graph.output],
    }
