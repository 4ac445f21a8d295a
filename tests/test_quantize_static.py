"""Static int8 encoder copies (export/quantize_static.py): the layers kept in floating point are the ones the
module names, identified by their weights against the torch modules; the copies are listed, verified and
really quantised; calibration feeds use the engine's preprocessing. Agreement of the fast mode that runs
them: tests/test_fast_mode.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper

from clipsam.engine.manifest import STATIC_INT8_GRAPHS, read_manifest
from clipsam.export.quantize_static import calibration_feeds, sensitive_nodes


def _weight_arrays(model: onnx.ModelProto) -> dict[str, list[np.ndarray]]:
    """{MatMul / Gemm node name: its constant inputs as arrays} (initializers and Constant nodes)."""
    constants = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return {
        node.name: [constants[name] for name in node.input if name in constants]
        for node in model.graph.node
        if node.op_type in ("MatMul", "Gemm")
    }


def _pieces(tensor: np.ndarray, parts: int) -> list[np.ndarray]:
    """A 2-D weight, its transpose, and its row blocks (an attention's fused q/k/v projection split in
    `parts`) with theirs."""
    pieces = [tensor, tensor.T]
    for block in np.split(tensor, parts, axis=0) if tensor.shape[0] % parts == 0 else []:
        pieces += [block, block.T]
    return pieces


def _matches(array: np.ndarray, expected: list[np.ndarray]) -> bool:
    return any(array.shape == piece.shape and np.allclose(array, piece, atol=1e-6) for piece in expected)


def _check_kept_weights(model: onnx.ModelProto, kept: list[str], tensors: list[np.ndarray]) -> None:
    """Every weight MatMul kept in float holds (a piece of) one of `tensors`, every tensor is held by a kept
    node, and no quantised node holds one of them."""
    expected = [piece for tensor in tensors for piece in _pieces(tensor, 3)]
    weights = {name: arrays for name, arrays in _weight_arrays(model).items() if arrays}
    kept_weights = [array for name in kept if name in weights for array in weights[name]]
    assert kept_weights and all(_matches(array, expected) for array in kept_weights)
    for tensor in tensors:
        assert any(_matches(array, _pieces(tensor, 3)) for array in kept_weights), (
            f"a weight of shape {tensor.shape} is not among the float layers"
        )
    others = [array for name, arrays in weights.items() if name not in kept for array in arrays]
    assert not any(_matches(array, expected) for array in others)


def test_sam2_keeps_its_convolutions_and_first_block_in_float(tiny_artifacts: Path, sam2_tiny):
    model = onnx.load(str(tiny_artifacts / "sam2_encoder.onnx"))
    kept = sensitive_nodes(model, "sam2_encoder")
    convs = [node.name for node in model.graph.node if node.op_type == "Conv"]
    assert convs and set(convs) <= set(kept)
    trunk = sam2_tiny.module.image_encoder.trunk
    first = trunk.blocks[0]
    tensors = [first.attn.qkv.weight, first.attn.proj.weight, *(layer.weight for layer in first.mlp.layers)]
    tensors.append(trunk.blocks[1].proj.weight)  # the second block's width change still runs at stride 4
    _check_kept_weights(model, kept, [t.detach().numpy() for t in tensors])


def test_sclip_keeps_its_patch_embedding_last_block_and_projection_in_float(
    tiny_artifacts: Path, tiny_clip_checkpoint: Path
):
    model = onnx.load(str(tiny_artifacts / "sclip_tower.onnx"))
    kept = sensitive_nodes(model, "sclip_tower")
    state = torch.load(tiny_clip_checkpoint, map_location="cpu", weights_only=False)
    last = max(int(key.split(".")[3]) for key in state if key.startswith("visual.transformer.resblocks."))
    prefix = f"visual.transformer.resblocks.{last}."
    names = ("attn.in_proj_weight", "attn.out_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
    tensors = [state[prefix + name] for name in names] + [state["visual.proj"]]
    _check_kept_weights(model, kept, [t.float().numpy() for t in tensors])
    assert [node.name for node in model.graph.node if node.op_type == "Conv"] == kept[:1]


def _attention_chain(blocks: int) -> onnx.ModelProto:
    """x → (weight MatMul → Softmax) × blocks: the smallest graph with `blocks` attention blocks."""
    nodes, name = [], "x"
    for index in range(blocks):
        nodes.append(helper.make_node("MatMul", [name, "w"], [f"y{index}"], name=f"projection{index}"))
        nodes.append(helper.make_node("Softmax", [f"y{index}"], [f"z{index}"], name=f"attention{index}"))
        name = f"z{index}"
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")],
    )
    return helper.make_model(graph)


def test_sensitive_nodes_follow_the_attention_blocks_and_refuse_unknown_graphs():
    assert sensitive_nodes(_attention_chain(3), "sam2_encoder") == ["projection0"]
    assert sensitive_nodes(_attention_chain(3), "sclip_tower") == ["projection2"]
    with pytest.raises(ValueError, match="at least two attention blocks"):
        sensitive_nodes(_attention_chain(1), "sam2_encoder")
    with pytest.raises(ValueError, match="no static int8 recipe"):
        sensitive_nodes(_attention_chain(2), "sam2_decoder")


def test_static_int8_copies_are_listed_verified_and_quantised(tiny_int8_artifacts: Path):
    manifest = read_manifest(tiny_int8_artifacts)  # sizes and sha256 of every listed file
    for source, name in STATIC_INT8_GRAPHS.items():
        entry = manifest.graph(name)
        assert entry["inputs"] == manifest.graph(source)["inputs"]
        assert entry["outputs"] == manifest.graph(source)["outputs"]
        assert 0.0 < max(entry["parity_max_abs"].values()) < 0.5, entry["parity_max_abs"]
        model = onnx.load(str(manifest.graph_path(name)))
        dequantized = {
            out for node in model.graph.node if node.op_type == "DequantizeLinear" for out in node.output
        }
        quantized = [
            node.name
            for node in model.graph.node
            if node.op_type in ("MatMul", "Conv") and any(name in dequantized for name in node.input)
        ]
        assert quantized, f"{name}: no int8 matmul"
        assert not set(quantized) & set(entry["float_nodes"]), "a layer listed as float was quantised"
    assert not [p for p in tiny_int8_artifacts.iterdir() if p.name.startswith(".")], "temp file left behind"


def test_calibration_feeds_are_the_engines_preprocessing(tiny_artifacts: Path):
    manifest = read_manifest(tiny_artifacts)
    sam = calibration_feeds("sam2_encoder", manifest.graph("sam2_encoder"), sizes=((60, 80),))
    assert [feed["image"].shape for feed in sam] == [(1, 3, 1024, 1024)]
    crop = manifest.graph("sclip_tower")["preprocessing"]["crop"]
    sclip = calibration_feeds("sclip_tower", manifest.graph("sclip_tower"), sizes=((96, 128), (128, 96)))
    assert [feed["crops"].shape[1:] for feed in sclip] == [(3, crop, crop)] * 2
    assert all(feed["crops"].dtype == np.float32 and len(feed["crops"]) >= 1 for feed in sclip)
    # different scenes (sizes and texture seeds), never the same input twice
    assert not np.array_equal(sclip[0]["crops"][0], sclip[1]["crops"][0])


def test_export_only_sclip_int8_writes_its_static_copy_and_runs_fast(tmp_path, tiny_clip_checkpoint, capsys):
    """`clipsam export --only sclip --int8`: the SCLIP static copy alone (no SAM2 copies), and a pipeline
    forced to int8-static on it makes a dense map that agrees with exact."""
    from clipsam.engine.bench.demo_scene import demo_scene
    from clipsam.engine.factory import load_pipeline
    from clipsam.engine.pipeline import vocabulary_from_words
    from tests.cli_helpers import run_cli

    out = tmp_path / "sclip-int8"
    args = ["export", "--out", out, "--only", "sclip", "--clip-checkpoint", tiny_clip_checkpoint, "--int8"]
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    manifest = read_manifest(out)
    assert manifest.has_graphs(("sclip_tower_int8_static",))
    assert not manifest.has_graphs(("sam2_encoder_int8_static",)) and not manifest.has_model("sam2")
    image, vocabulary = demo_scene(96, 128), vocabulary_from_words(["sky", "car", "road"])
    exact = load_pipeline(out).dense(image, vocabulary).probs
    fast_pipeline = load_pipeline(out, precision="fast", fast_mechanism="int8-static")
    assert fast_pipeline.models["fast_mechanism"] == "int8-static"
    fast = fast_pipeline.dense(image, vocabulary).probs
    assert (fast.argmax(0) == exact.argmax(0)).mean() >= 0.99
