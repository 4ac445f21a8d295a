"""Static int8 copies of the two encoders: post-training quantisation calibrated on generated scenes (NNCF).

Unlike the dynamic copy of export/quantize.py, the activations' int8 ranges are fixed from calibration
(NNCF's transformer preset: SmoothQuant, then per-channel symmetric weights and per-tensor activations), and
the result is an ONNX graph with QuantizeLinear / DequantizeLinear pairs. OpenVINO reads those pairs as int8
convolutions and matmuls (VNNI dot products); `--precision fast` runs the copies there, with bf16 for the
remaining ops on CPUs with native bf16 (engine/precision.py).

Some layers stay in floating point because quantising them moved the outputs that matter most (figures in
benchmarks/README.md, issue 17):
- every convolution (patch embeddings and SAM2's FPN neck: ~5 % of the FLOPs);
- SAM2: the image encoder's first block, the only one at stride 4, which alone feeds `high_res_feats_0`;
  int8 there cost most of the per-prompt mask IoU;
- SCLIP: the last block (the correlative self-attention that makes the dense map) and the output projection.
The layers are found from the graph's structure (`sensitive_nodes`), not from exporter-generated names.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from clipsam.export.quantize import quiet_logger, write_atomically

# Calibration images: the demo street scene (engine/bench/demo_scene.py) at these sizes, a seed each.
CALIBRATION_SIZES = ((480, 640), (720, 1280), (640, 480), (1024, 1024), (360, 640), (600, 800))
QUANTISED_BY = "NNCF post-training static int8 (transformer preset), calibrated on generated scenes"


def calibration_feeds(
    graph: str, entry: Mapping, sizes: Sequence[tuple[int, int]] = CALIBRATION_SIZES, first_seed: int = 0
) -> list[dict[str, np.ndarray]]:
    """One feed dict per scene (sizes[i] with texture seed first_seed + i) for an encoder graph
    ("sclip_tower" or "sam2_encoder"), built with the engine's own preprocessing. `entry` is the graph's
    manifest entry (SCLIP: its crop size)."""
    from clipsam.engine.bench.demo_scene import demo_scene
    from clipsam.engine.dense_clip import DenseConfig, slide_windows
    from clipsam.engine.transforms import preprocess_sam2, sclip_preprocess

    feeds = []
    for seed, (height, width) in enumerate(sizes, start=first_seed):
        scene = demo_scene(height, width, seed=seed)
        if graph == "sam2_encoder":
            feeds.append({"image": preprocess_sam2(scene)})
            continue
        crop = int(entry["preprocessing"]["crop"])
        network = sclip_preprocess(scene, DenseConfig().short_side)
        windows = slide_windows(*network.shape[1:], crop, crop // 2)
        crops = np.stack([network[:, y0:y1, x0:x1] for y0, y1, x0, x1 in windows])
        feeds.append({"crops": np.ascontiguousarray(crops, dtype=np.float32)})
    return feeds


def sensitive_nodes(model, graph: str) -> list[str]:
    """Names of the nodes of `model` (onnx.ModelProto) kept in floating point (module docstring): all Conv
    nodes, plus for "sam2_encoder" the first transformer block and for "sclip_tower" the last one and the
    projection after it.

    A block is delimited by its attention: the first weight MatMul upstream of a Softmax is the block's input
    projection. SAM2's first block = the matmuls before the second attention's input projection; SCLIP's last
    block = its last attention's input projection and every matmul after it."""
    nodes = list(model.graph.node)  # ONNX keeps nodes in topological order
    weights = {init.name for init in model.graph.initializer} | _constant_outputs(nodes)
    matmuls = [i for i, node in enumerate(nodes) if node.op_type in ("MatMul", "Gemm")]
    producer = {output: index for index, node in enumerate(nodes) for output in node.output}
    projections = sorted(
        {
            _input_projection(nodes, producer, i, weights)
            for i, n in enumerate(nodes)
            if n.op_type == "Softmax"
        }
    )
    if len(projections) < 2:
        raise ValueError(f"{graph}: expected at least two attention blocks, found {len(projections)}")
    if graph == "sam2_encoder":
        chosen = [i for i in matmuls if i < projections[1]]
    elif graph == "sclip_tower":
        chosen = [i for i in matmuls if i >= projections[-1]]
    else:
        raise ValueError(f"no static int8 recipe for graph {graph!r}")
    return [node.name for node in nodes if node.op_type == "Conv"] + [nodes[i].name for i in chosen]


def _constant_outputs(nodes) -> set[str]:
    return {output for node in nodes if node.op_type == "Constant" for output in node.output}


def _input_projection(nodes, producer: dict[str, int], softmax: int, weights: set[str]) -> int:
    """Index of the last weight MatMul (one input a constant) upstream of node `softmax`; `producer` maps
    each tensor name to the index of the node that makes it."""
    stack, seen, found = [softmax], set(), []
    while stack:
        index = stack.pop()
        if index in seen:
            continue
        seen.add(index)
        node = nodes[index]
        if node.op_type in ("MatMul", "Gemm") and any(name in weights for name in node.input):
            found.append(index)
            continue
        stack.extend(producer[name] for name in node.input if name in producer)
    if not found:
        raise ValueError(f"no input projection upstream of Softmax node {nodes[softmax].name!r}")
    return max(found)


def quantize_static_graph(
    source: Path | str, target: Path | str, feeds: Sequence[Mapping[str, np.ndarray]], ignored: Sequence[str]
) -> Path:
    """Write a static int8 (QDQ) copy of the ONNX graph `source` to `target` (atomic), calibrated on `feeds`;
    the nodes named in `ignored` stay in floating point. Returns `target`."""
    import nncf
    import onnx

    def write(temp_name: str) -> None:
        # NNCF's advice and progress bars, and torch's "No CUDA runtime" warning when NNCF imports its torch
        # extensions, stay out of the export's log
        with (
            quiet_logger("nncf"),
            quiet_logger("torch.utils.cpp_extension"),
            contextlib.redirect_stdout(io.StringIO()),
        ):
            quantized = nncf.quantize(
                onnx.load(str(source)),
                nncf.Dataset(list(feeds)),
                model_type=nncf.ModelType.TRANSFORMER,
                subset_size=len(feeds),
                ignored_scope=nncf.IgnoredScope(names=list(ignored)),
            )
        onnx.save(quantized, temp_name)

    return write_atomically(Path(target), write)


def static_int8_entries(manifest, log=print) -> dict:
    """Write the static int8 copies of manifest.STATIC_INT8_GRAPHS (the encoders `manifest`'s folder has)
    beside their sources; returns their manifest entries, with parity against fp32 on a scene not used for
    calibration. export/quantize.py's add_int8_graphs lists them in the manifest."""
    import onnx

    from clipsam.engine.manifest import STATIC_INT8_GRAPHS
    from clipsam.export.quantize import copy_entry, graph_parity

    entries = {}
    for source, name in STATIC_INT8_GRAPHS.items():
        if not manifest.has_graphs((source,)):
            continue
        entry = manifest.graph(source)
        source_path = manifest.graph_path(source)
        target = source_path.with_name(f"{source}.int8-static.onnx")
        ignored = sensitive_nodes(onnx.load(str(source_path), load_external_data=False), source)
        quantize_static_graph(source_path, target, calibration_feeds(source, entry), ignored)
        held_out = calibration_feeds(source, entry, sizes=((480, 640),), first_seed=len(CALIBRATION_SIZES))[0]
        parity = graph_parity(source_path, target, held_out)
        entries[name] = {
            **copy_entry(source_path, target, QUANTISED_BY, parity),
            "float_nodes": ignored,
            "inputs": entry["inputs"],
            "outputs": entry["outputs"],
        }
        log(
            f"quantised {source_path.name} → {target.name} "
            f"(static int8, max abs vs fp32 {max(parity.values()):.3g})"
        )
    return entries
