"""This machine's GEMM peak at the encoders' shapes, per runtime, precision and thread count.

    python benchmarks/peak_gemm.py [--repeats 7] [--json out.json]

Shapes: the ViT-B/16 MLP of the SCLIP tower over 12 sliding-window crops ([12·197, 768] × [768, 3072]) and
the Hiera stage-3 MLP of the SAM2.1 encoder at 1024² ([64·64, 384] × [384, 1536]). Runtimes: onnxruntime
(a one-MatMul graph: MLAS fp32; MatMulInteger U8U8 and U8S8 for int8), OpenVINO (the same graph compiled
with inference precision f32 and, where the CPU has native bf16, bf16) and torch (fp32, bf16). Each cell is
the median over `repeats` timed calls after a warm-up; GFLOP/s = 2·M·K·N / time. Prints a table with the
CPU capability class (engine/precision.py); the figures are quoted in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import numpy as np

SHAPES = {"vit-b16 mlp": (12 * 197, 768, 3072), "hiera-t stage3 mlp": (64 * 64, 384, 1536)}
THREADS = (1, 2)


def median_seconds(call: Callable[[], object], repeats: int) -> float:
    """Median wall time of `call` over `repeats` timed calls after two untimed ones."""
    call()
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_model(k: int, n: int, weight: np.ndarray, integer: bool):
    """An ONNX graph Y = A @ W with W [k, n] an initializer; MatMulInteger (int32 Y) when `integer`."""
    from onnx import TensorProto, helper, numpy_helper

    a_type = TensorProto.UINT8 if integer else TensorProto.FLOAT
    y_type = TensorProto.INT32 if integer else TensorProto.FLOAT
    node = helper.make_node("MatMulInteger" if integer else "MatMul", ["A", "W"], ["Y"])
    graph = helper.make_graph(
        [node],
        "gemm",
        [helper.make_tensor_value_info("A", a_type, ["M", k])],
        [helper.make_tensor_value_info("Y", y_type, ["M", n])],
        [numpy_helper.from_array(weight, "W")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def ort_runner(shape, threads: int, dtype: str) -> Callable[[], object]:
    import onnxruntime as ort

    m, k, n = shape
    rng = np.random.default_rng(0)
    if dtype == "fp32":
        weight, a = rng.standard_normal((k, n), np.float32), rng.standard_normal((m, k), np.float32)
    else:  # "u8u8" / "u8s8"
        weight_type = np.uint8 if dtype == "u8u8" else np.int8
        info = np.iinfo(weight_type)
        weight = rng.integers(info.min, info.max, (k, n), dtype=weight_type)
        a = rng.integers(0, 255, (m, k), dtype=np.uint8)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    model = matmul_model(k, n, weight, integer=dtype != "fp32")
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return lambda: session.run(None, {"A": a})


def openvino_runner(shape, threads: int, precision: str) -> Callable[[], object]:
    import openvino

    m, k, n = shape
    rng = np.random.default_rng(0)
    model = matmul_model(k, n, rng.standard_normal((k, n), np.float32), integer=False)
    core = openvino.Core()
    config = {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": threads}
    compiled = core.compile_model(core.read_model(model.SerializeToString(), b""), "CPU", config)
    request = compiled.create_infer_request()
    a = rng.standard_normal((m, k), np.float32)
    return lambda: request.infer({"A": a})


def torch_runner(shape, threads: int, precision: str) -> Callable[[], object]:
    import torch

    m, k, n = shape
    dtype = torch.float32 if precision == "fp32" else torch.bfloat16
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(m, k, generator=generator).to(dtype)
    weight = torch.randn(k, n, generator=generator).to(dtype)

    def run():
        torch.set_num_threads(threads)
        with torch.inference_mode():
            return a @ weight

    return run


def cases(bf16: bool) -> list[tuple[str, str, Callable]]:
    """(runtime, precision, runner factory(shape, threads)) for every cell this CPU can run."""
    rows = [
        ("onnxruntime", "fp32", lambda s, t: ort_runner(s, t, "fp32")),
        ("onnxruntime", "int8 u8u8", lambda s, t: ort_runner(s, t, "u8u8")),
        ("onnxruntime", "int8 u8s8", lambda s, t: ort_runner(s, t, "u8s8")),
        ("openvino", "fp32", lambda s, t: openvino_runner(s, t, "f32")),
        ("torch", "fp32", lambda s, t: torch_runner(s, t, "fp32")),
    ]
    if bf16:
        rows.insert(4, ("openvino", "bf16", lambda s, t: openvino_runner(s, t, "bf16")))
        rows.append(("torch", "bf16", lambda s, t: torch_runner(s, t, "bf16")))
    return rows


def main() -> None:
    from clipsam.engine.precision import BF16_CLASSES, this_capability_class

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args()
    capability = this_capability_class()
    print(f"capability class: {capability}")
    print(f"{'shape':<20} {'runtime':<12} {'precision':<10} " + " ".join(f"{t}thr GFLOP/s" for t in THREADS))
    rows = []
    for shape_name, shape in SHAPES.items():
        flop = 2.0 * shape[0] * shape[1] * shape[2]
        for runtime, precision, factory in cases(capability in BF16_CLASSES):
            rates = [flop / median_seconds(factory(shape, t), args.repeats) / 1e9 for t in THREADS]
            rows.append(
                {
                    "shape": shape_name,
                    "mkn": shape,
                    "runtime": runtime,
                    "precision": precision,
                    **{f"gflops_{t}thr": round(r, 1) for t, r in zip(THREADS, rates, strict=True)},
                }
            )
            cells = " ".join(f"{r:>13.1f}" for r in rates)
            print(f"{shape_name:<20} {runtime:<12} {precision:<10} {cells}", flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"capability_class": capability, "rows": rows}, handle, indent=1)


if __name__ == "__main__":
    main()
