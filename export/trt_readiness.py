"""Static TensorRT-readiness check of exported ONNX graphs (runs anywhere: onnx only, no TensorRT, no GPU).

Each check names a rule of TensorRT's ONNX parser (10.x) that our graphs must keep: no ops the parser rejects
(or that betray a trace of data-dependent Python), int32 shape-like inputs, every dynamic input dimension
covered by an optimisation profile, no attribute values the parser refuses, int64 constants that survive the
cast to int32, and an opset the parser reads. `trt_build.py` builds its profiles from the same table.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from clipsam.engine.manifest import INT8_COPIES, read_manifest
from clipsam.export.onnx_utils import FORBIDDEN_OPS, op_census

MIN_OPSET, MAX_OPSET = 9, 20
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


@dataclass(frozen=True)
class DimRange:
    """An optimisation-profile range of one dynamic dimension (TensorRT's min / opt / max)."""

    min: int
    opt: int
    max: int

    def as_list(self) -> list[int]:
        return [self.min, self.opt, self.max]


# Dynamic dimensions by the symbolic name the exporters give them. SCLIP crops: the default dense config
# (short side 336, 224 crops, stride 112) gives 6 windows for a 4:3 photo (opt 8) and at most 2 x 18 = 36 at
# the 2048 px long-side cap, so max 48 covers every image in one call.
TRT_PROFILES: dict[str, DimRange] = {
    "num_prompts": DimRange(1, 64, 512),
    "num_points": DimRange(1, 3, 8),
    "num_crops": DimRange(1, 8, 48),
    # CLIP text prompts (template x query): batches of up to 256, cut after the longest EOT (<= 77 tokens).
    "num_texts": DimRange(1, 80, 256),
    "text_length": DimRange(2, 16, 77),
}

# Not in the ONNX-TensorRT parser's support matrix (sequences, strings, quantised integer maths, randomness).
PARSER_UNSUPPORTED_OPS = frozenset(
    {
        "Bernoulli", "BitShift", "Compress", "ConcatFromSequence", "ConvInteger", "Det",
        "DynamicQuantizeLinear", "MatMulInteger", "MaxRoiPool", "MaxUnpool", "Multinomial",
        "NegativeLogLikelihoodLoss", "Optional",
        "OptionalGetElement", "OptionalHasElement", "QLinearConv", "QLinearMatMul", "SequenceAt",
        "SequenceEmpty", "SequenceErase", "SequenceInsert", "SequenceLength", "SplitToSequence",
        "StringNormalizer", "TfIdfVectorizer", "Unique", "ImageDecoder", "RegexFullMatch", "StringConcat",
        "StringSplit",
    }
)  # fmt: skip
_WHY_FORBIDDEN = {
    "OneHot": "the trace of repeat_interleave with a traced count; use expand/broadcasting",
    "Tile": "the trace of repeat_interleave with a traced count; use expand/broadcasting",
    "If": "a Python branch on a tensor value was traced; compute both sides or decide outside the graph",
    "Loop": "a Python loop over a tensor value was traced; unroll it or move it outside the graph",
    "Scan": "a recurrent scan was traced; unroll it",
    "DFT": "complex arithmetic (FFT) has no TensorRT layer",
    "STFT": "complex arithmetic (STFT) has no TensorRT layer",
    "SequenceConstruct": "a Python list of tensors became a sequence; concatenate instead",
}
_COMPLEX_TYPES = {onnx.TensorProto.COMPLEX64, onnx.TensorProto.COMPLEX128}
_TRT_INPUT_TYPES = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.BFLOAT16: "bfloat16",
    onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.INT8: "int8",
    onnx.TensorProto.UINT8: "uint8",
    onnx.TensorProto.BOOL: "bool",
}
_RESIZE_MODES = {"nearest", "linear", "cubic"}
_RESIZE_COORDINATES = {
    "half_pixel",
    "pytorch_half_pixel",
    "tf_half_pixel_for_nn",
    "asymmetric",
    "align_corners",
}
_RESIZE_NEAREST = {"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"}
# (op, input index) pairs the parser needs as build-time constants.
_CONSTANT_INPUTS = {
    ("Conv", 1): "weights",
    ("ConvTranspose", 1): "weights",
    ("Slice", 3): "axes",
    ("Squeeze", 1): "axes",
    ("Unsqueeze", 1): "axes",
    ("TopK", 1): "K",
}


@dataclass(frozen=True)
class Problem:
    """One reason a graph would not build as a TensorRT engine: the rule broken and where."""

    check: str
    message: str


@dataclass
class GraphReadiness:
    """The check of one graph: problems (empty = ready) and notes (what was checked, the profiles used)."""

    name: str
    file: str
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        head = f"{self.name} ({self.file}): {'READY' if self.ready else 'NOT READY'}"
        return [
            head,
            *(f"  - {p.check}: {p.message}" for p in self.problems),
            *(f"  · {n}" for n in self.notes),
        ]


@dataclass
class ReadinessReport:
    """The check of every graph of an artifact folder."""

    directory: Path
    graphs: list[GraphReadiness]

    @property
    def ready(self) -> bool:
        return all(graph.ready for graph in self.graphs)

    def text(self) -> str:
        lines = [line for graph in self.graphs for line in graph.lines()]
        verdict = "all graphs TensorRT-ready" if self.ready else "some graphs are NOT TensorRT-ready"
        return "\n".join([*lines, verdict])


def check_artifacts(directory: Path | str, profiles: dict[str, DimRange] | None = None) -> ReadinessReport:
    """Check every graph listed in DIR/manifest.json (the manifest and file digests are verified first),
    except the int8 copies of `--int8`: they are CPU graphs (onnxruntime's dynamic quantisation ops, or
    static QDQ copies calibrated for OpenVINO); on TensorRT the fast precision is an fp16 engine built from
    the fp32 graph."""
    manifest = read_manifest(directory)
    names = [name for name in manifest.graph_names if name not in INT8_COPIES]
    reports = [check_graph(manifest.graph_path(name), name, profiles) for name in names]
    return ReadinessReport(manifest.directory, reports)


def check_graph(
    model: onnx.ModelProto | Path | str, name: str | None = None, profiles: dict[str, DimRange] | None = None
) -> GraphReadiness:
    """Run every readiness check on one ONNX graph (a path or a loaded model)."""
    file = "<in memory>" if isinstance(model, onnx.ModelProto) else Path(model).name
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    profiles = TRT_PROFILES if profiles is None else profiles
    report = GraphReadiness(name or model.graph.name or file, file)
    report.problems += _opset_problems(model)
    report.problems += _op_problems(model)
    report.problems += _input_problems(model)
    report.problems += _dynamic_dim_problems(model, profiles)
    report.problems += _attribute_problems(model.graph)
    report.problems += _int64_problems(model.graph)
    report.notes += _profile_notes(model, profiles)
    return report


def _opset_problems(model: onnx.ModelProto) -> list[Problem]:
    problems = []
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            if not MIN_OPSET <= opset.version <= MAX_OPSET:
                problems.append(
                    Problem("opset", f"opset {opset.version} outside the parser's {MIN_OPSET}..{MAX_OPSET}")
                )
        else:
            problems.append(
                Problem("opset", f"custom op domain '{opset.domain}' would need a TensorRT plugin")
            )
    return problems


def _op_problems(model: onnx.ModelProto) -> list[Problem]:
    census = op_census(model)
    problems = [
        Problem("forbidden op", f"{op} x{census[op]} ({_WHY_FORBIDDEN.get(op, 'rejected by the parser')})")
        for op in sorted(census)
        if op in FORBIDDEN_OPS
    ]
    problems += [
        Problem("unsupported op", f"{op} x{census[op]} is not in TensorRT's ONNX parser")
        for op in sorted(census)
        if op in PARSER_UNSUPPORTED_OPS and op not in FORBIDDEN_OPS
    ]
    complex_values = [
        v.name for v in _all_values(model.graph) if v.type.tensor_type.elem_type in _COMPLEX_TYPES
    ]
    if complex_values:
        problems.append(
            Problem("complex", f"complex tensors ({', '.join(complex_values[:3])}) have no TensorRT type")
        )
    return problems


def _input_problems(model: onnx.ModelProto) -> list[Problem]:
    problems = []
    for value in _graph_inputs(model.graph):
        elem = value.type.tensor_type.elem_type
        if elem == onnx.TensorProto.INT64:
            problems.append(
                Problem("input dtype", f"input '{value.name}' is int64; export shape-like inputs as int32")
            )
        elif elem not in _TRT_INPUT_TYPES:
            dtype = onnx.TensorProto.DataType.Name(elem)
            problems.append(
                Problem("input dtype", f"input '{value.name}' has type {dtype}, not a TensorRT input type")
            )
    return problems


def _dynamic_dim_problems(model: onnx.ModelProto, profiles: dict[str, DimRange]) -> list[Problem]:
    problems, input_dims = [], set()
    for value in _graph_inputs(model.graph):
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.HasField("dim_value") and dim.dim_value > 0:
                continue
            label = dim.dim_param or "<unnamed>"
            input_dims.add(dim.dim_param)
            if dim.dim_param not in profiles:
                problems.append(
                    Problem(
                        "profile",
                        f"dynamic dim '{label}' (input '{value.name}', axis {axis}) is covered by no "
                        f"optimisation profile (profiles cover: {', '.join(sorted(profiles))})",
                    )
                )
            elif not 1 <= profiles[label].min <= profiles[label].opt <= profiles[label].max:
                problems.append(Problem("profile", f"profile of '{label}' is not 1 <= min <= opt <= max"))
    for value in model.graph.output:
        for dim in value.type.tensor_type.shape.dim:
            if not (dim.HasField("dim_value") and dim.dim_value > 0) and dim.dim_param not in input_dims:
                problems.append(
                    Problem(
                        "output shape",
                        f"output '{value.name}' has dim '{dim.dim_param or '<unnamed>'}' that no input dim "
                        "determines (data-dependent shape)",
                    )
                )
    return problems


def _attribute_problems(graph: onnx.GraphProto) -> list[Problem]:
    constants = {init.name for init in graph.initializer}
    constants |= {out for node in graph.node if node.op_type == "Constant" for out in node.output}
    problems = []
    for node in graph.node:
        problems += _node_attribute_problems(node)
        for index, tensor in enumerate(node.input):
            what = _CONSTANT_INPUTS.get((node.op_type, index))
            if what and tensor and tensor not in constants:
                problems.append(
                    Problem("attribute", f"{node.op_type} '{node.name}': {what} must be a constant")
                )
    return problems


def _node_attribute_problems(node: onnx.NodeProto) -> list[Problem]:
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    text = {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}
    bad = []
    if node.op_type == "Resize":
        if text.get("mode", "nearest") not in _RESIZE_MODES:
            bad.append(f"mode={text['mode']}")
        if text.get("coordinate_transformation_mode", "half_pixel") not in _RESIZE_COORDINATES:
            bad.append(f"coordinate_transformation_mode={text['coordinate_transformation_mode']}")
        if text.get("mode", "nearest") == "nearest" and text.get(
            "nearest_mode", "round_prefer_floor"
        ) not in (_RESIZE_NEAREST):
            bad.append(f"nearest_mode={text['nearest_mode']}")
        if text.get("antialias", 0):
            bad.append("antialias=1 (resize with antialias outside the graph)")
        if text.get("exclude_outside", 0):
            bad.append("exclude_outside=1")
        if text.get("keep_aspect_ratio_policy", "stretch") != "stretch":
            bad.append(f"keep_aspect_ratio_policy={text['keep_aspect_ratio_policy']}")
    elif node.op_type in ("ArgMax", "ArgMin") and text.get("select_last_index", 0):
        bad.append("select_last_index=1")
    elif node.op_type == "Pad" and text.get("mode", "constant") not in ("constant", "reflect", "edge"):
        bad.append(f"mode={text['mode']}")
    elif node.op_type == "Cast" and text.get("to") in _COMPLEX_TYPES | {onnx.TensorProto.DOUBLE}:
        bad.append(f"to={onnx.TensorProto.DataType.Name(text['to'])}")
    return [Problem("attribute", f"{node.op_type} '{node.name}': {b} not supported by TensorRT") for b in bad]


def _int64_problems(graph: onnx.GraphProto) -> list[Problem]:
    """int64 constants are cast to int32 by TensorRT; values outside int32 break the graph.

    Exception: Slice starts/ends (inputs 1 and 2), where the exporter writes +-INT64_MAX for "to the end" and
    ONNX clamps them to the dimension, so the cast keeps the meaning.
    """
    consumers: dict[str, list[tuple[str, int]]] = {}
    for node in graph.node:
        for index, tensor in enumerate(node.input):
            consumers.setdefault(tensor, []).append((node.op_type, index))
    problems = []
    for name, values in _int64_constants(graph):
        if values.size == 0 or (values.min() >= INT32_MIN and values.max() <= INT32_MAX):
            continue
        uses = consumers.get(name, [])
        if uses and all(op == "Slice" and index in (1, 2) for op, index in uses):
            continue
        worst = int(values.max() if values.max() > INT32_MAX else values.min())
        problems.append(
            Problem(
                "int64 weights", f"'{name}' holds {worst}, outside int32 (used by {_describe_uses(uses)})"
            )
        )
    return problems


def _int64_constants(graph: onnx.GraphProto) -> Iterable[tuple[str, np.ndarray]]:
    for init in graph.initializer:
        if init.data_type == onnx.TensorProto.INT64:
            yield init.name, numpy_helper.to_array(init)
    for node in graph.node:
        if node.op_type != "Constant":
            continue
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == onnx.TensorProto.INT64:
                yield node.output[0], numpy_helper.to_array(attr.t)
            elif attr.name == "value_ints":
                yield node.output[0], np.asarray(attr.ints, dtype=np.int64)


def _describe_uses(uses: list[tuple[str, int]]) -> str:
    return ", ".join(f"{op} input {index}" for op, index in uses) or "nothing"


def _profile_notes(model: onnx.ModelProto, profiles: dict[str, DimRange]) -> list[str]:
    notes = []
    for value in _graph_inputs(model.graph):
        dims = [d.dim_param if d.dim_param else d.dim_value for d in value.type.tensor_type.shape.dim]
        elem = _TRT_INPUT_TYPES.get(value.type.tensor_type.elem_type, "?")
        ranges = [f"{d}={profiles[d].as_list()}" for d in dims if isinstance(d, str) and d in profiles]
        notes.append(f"input {value.name} {elem} {dims}" + (f" profile {' '.join(ranges)}" if ranges else ""))
    census = op_census(model)
    notes.append(f"{sum(census.values())} nodes, {len(census)} op types, opset {_default_opset(model)}")
    return notes


def _default_opset(model: onnx.ModelProto) -> int | None:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def _graph_inputs(graph: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    initializers = {init.name for init in graph.initializer}
    return [value for value in graph.input if value.name not in initializers]


def _all_values(graph: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    return [*graph.input, *graph.output, *graph.value_info]
