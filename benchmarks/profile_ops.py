"""Where an exported encoder's time goes per op type: onnxruntime's profiler or OpenVINO's perf counts.

    python benchmarks/profile_ops.py ARTIFACTS --graph sclip_tower|sam2_encoder
        [--runtime onnxruntime|openvino-f32|openvino-bf16] [--crops 6] [--runs 3]

Runs the graph `runs` times after a warm-up on seeded noise (SCLIP: `crops` crops of 224; SAM2: one
1024² image), sums each op type's time over the timed runs and prints ms per run, the share of the summed op
time, a category summary (GEMM = MatMul / Gemm / Conv and their fused or int8 forms; layout = Transpose /
Reshape / Concat / Slice / …; Softmax; normalisation; elementwise and the rest) and the achieved GFLOP/s
from the wall time (FLOPs from torch's counter: ViT-B/16 22.5 GFLOP per crop, SAM2.1 tiny 207 GFLOP).
"""

from __future__ import annotations

import argparse
import collections
import json
import time
from pathlib import Path

import numpy as np

GFLOP = {"sclip_tower": 22.5, "sam2_encoder": 207.0}  # per crop / per image
CATEGORY_OPS = {
    "gemm": (
        "MatMul",
        "Gemm",
        "FusedMatMul",
        "Conv",
        "FusedConv",
        "MatMulInteger",
        "ConvInteger",
        "FullyConnected",
        "Convolution",
        "GroupConvolution",
        "QLinearMatMul",
        "MatMulNBits",
    ),
    "layout": (
        "Transpose",
        "Reshape",
        "Concat",
        "Slice",
        "Split",
        "Gather",
        "Squeeze",
        "Unsqueeze",
        "Expand",
        "Pad",
        "Tile",
        "Reorder",
        "Permute",
        "StridedSlice",
        "Flatten",
    ),
    "softmax": ("Softmax", "SoftMax"),
    "normalisation": (
        "LayerNormalization",
        "SkipLayerNormalization",
        "ReduceMean",
        "MVN",
        "Sqrt",
        "SimplifiedLayerNormalization",
    ),
    "quantisation": ("DynamicQuantizeLinear", "DequantizeLinear", "QuantizeLinear"),
}


def category(op_type: str) -> str:
    for name, ops in CATEGORY_OPS.items():
        if op_type in ops:
            return name
    return "elementwise/other"


def graph_feeds(graph: str, crops: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    if graph == "sclip_tower":
        return {"crops": rng.standard_normal((crops, 3, 224, 224), np.float32)}
    return {"image": rng.standard_normal((1, 3, 1024, 1024), np.float32)}


def profile_onnxruntime(path: Path, feeds: dict, runs: int) -> tuple[dict[str, float], float]:
    """{op type: summed µs over `runs`}, median wall seconds per run."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    session.run(None, feeds)  # warm-up outside the profile
    options.enable_profiling = True
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    session.run(None, feeds)
    walls = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feeds)
        walls.append(time.perf_counter() - start)
    events = json.loads(Path(session.end_profiling()).read_text())
    per_op: dict[str, float] = collections.defaultdict(float)
    node_events = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    for event in node_events[len(node_events) // (runs + 1) :]:  # drop the first (warm-up) run's events
        per_op[event["args"]["op_name"]] += float(event["dur"])
    return dict(per_op), float(np.median(walls))


def profile_openvino(path: Path, feeds: dict, runs: int, precision: str) -> tuple[dict[str, float], float]:
    import openvino

    core = openvino.Core()
    config = {"INFERENCE_PRECISION_HINT": precision, "PERF_COUNT": True, "PERFORMANCE_HINT": "LATENCY"}
    compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
    request = compiled.create_infer_request()
    request.infer(feeds)
    per_op: dict[str, float] = collections.defaultdict(float)
    walls = []
    for _ in range(runs):
        start = time.perf_counter()
        request.infer(feeds)
        walls.append(time.perf_counter() - start)
        for info in request.get_profiling_info():
            per_op[info.node_type] += info.real_time.total_seconds() * 1e6
    return dict(per_op), float(np.median(walls))


def report(per_op: dict[str, float], wall_s: float, runs: int, gflop: float) -> dict:
    total = sum(per_op.values())
    by_category: dict[str, float] = collections.defaultdict(float)
    print(f"{'op type':<32} {'ms/run':>9} {'share':>7}")
    for op, us in sorted(per_op.items(), key=lambda item: -item[1])[:20]:
        print(f"{op:<32} {us / runs / 1e3:>9.1f} {us / total:>7.1%}")
    for op, us in per_op.items():
        by_category[category(op)] += us
    print("-- by category")
    for name, us in sorted(by_category.items(), key=lambda item: -item[1]):
        print(f"{name:<32} {us / runs / 1e3:>9.1f} {us / total:>7.1%}")
    rate = gflop / wall_s
    print(
        f"wall median {wall_s * 1e3:.0f} ms/run, op sum {total / runs / 1e3:.0f} ms/run, {rate:.1f} GFLOP/s"
    )
    return {
        "wall_ms": wall_s * 1e3,
        "gflop_per_s": rate,
        "share": {k: v / total for k, v in by_category.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifacts", type=Path)
    parser.add_argument("--graph", choices=tuple(GFLOP), required=True)
    parser.add_argument(
        "--runtime", choices=("onnxruntime", "openvino-f32", "openvino-bf16"), default="onnxruntime"
    )
    parser.add_argument("--file", default=None, help="graph file in ARTIFACTS (default: GRAPH.onnx)")
    parser.add_argument("--crops", type=int, default=6)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    path = args.artifacts / (args.file or f"{args.graph}.onnx")
    feeds = graph_feeds(args.graph, args.crops)
    if args.runtime == "onnxruntime":
        per_op, wall = profile_onnxruntime(path, feeds, args.runs)
    else:
        per_op, wall = profile_openvino(path, feeds, args.runs, args.runtime.removeprefix("openvino-"))
    gflop = GFLOP[args.graph] * (args.crops if args.graph == "sclip_tower" else 1)
    print(f"{path.name} on {args.runtime}")
    report(per_op, wall, args.runs, gflop)


if __name__ == "__main__":
    main()
