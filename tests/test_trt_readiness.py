"""Static TensorRT readiness: the real exported graphs pass; purpose-built bad graphs fail naming the problem.

One export per session (golden tiny CLIP + SAM2.1 tiny with seeded random weights: the real SAM2 graphs).
Also the TensorRT-free parts of the engine build and backend: profiles, fp32 layer selection, engine/GPU
mismatch messages, profile choice, and the one-line error without TensorRT.
"""

from __future__ import annotations

import sys

import onnx
import pytest
import torch
from onnx import TensorProto, helper

from clipsam.engine.backends.tensorrt import (
    EngineMismatchError,
    GpuIdentity,
    check_engine_matches,
    choose_profile,
)
from clipsam.engine.errors import ClipsamError
from clipsam.engine.manifest import FAST_DECODER_GRAPHS, GRAPHS, REGIONS_GRAPH, TEXT_GRAPH, read_manifest
from clipsam.export.onnx_utils import export_onnx
from clipsam.export.trt_build import build_engines, fp32_scopes, keeps_fp32, profile_shapes
from clipsam.export.trt_readiness import TRT_PROFILES, check_artifacts, check_graph


def test_exported_graphs_are_tensorrt_ready(tiny_int8_artifacts):
    """Every graph of an `--int8` export but the int8 copies (onnxruntime-CPU quantisation ops)."""
    report = check_artifacts(tiny_int8_artifacts)
    print(report.text())
    sclip_tower, *sam2_graphs = GRAPHS
    expected = [sclip_tower, REGIONS_GRAPH, TEXT_GRAPH, *sam2_graphs, *FAST_DECODER_GRAPHS]  # manifest order
    assert [graph.name for graph in report.graphs] == expected
    assert report.ready, report.text()
    text = report.text()
    assert (
        "num_prompts=[1, 64, 512]" in text
        and "num_points=[1, 3, 8]" in text
        and "num_crops=[1, 8, 48]" in text
        and "num_texts=[1, 80, 256]" in text
        and "text_length=[2, 16, 77]" in text
    )


class RepeatByCount(torch.nn.Module):
    """Repeats each image embedding once per prompt with a traced count: the OneHot/Tile export pitfall."""

    def forward(self, embed: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        return torch.repeat_interleave(embed, coords.shape[0], dim=0) + coords.sum()


def test_repeat_interleave_with_traced_count_is_refused(tmp_path):
    path = export_onnx(
        RepeatByCount(),
        (torch.zeros(1, 4), torch.zeros(3, 2)),
        tmp_path / "repeat.onnx",
        input_names=["embed", "point_coords"],
        output_names=["repeated"],
        dynamic_axes={"point_coords": {0: "num_prompts"}},
    )
    report = check_graph(path)
    assert not report.ready
    forbidden = [p.message for p in report.problems if p.check == "forbidden op"]
    assert forbidden and any(op in " ".join(forbidden) for op in ("OneHot", "Tile"))
    assert "repeat_interleave" in " ".join(forbidden)


def _model(inputs, outputs, nodes, initializers=(), opset=17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "bad", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model


def test_int64_labels_input_is_refused():
    labels = helper.make_tensor_value_info("point_labels", TensorProto.INT64, ["num_prompts", "num_points"])
    out = helper.make_tensor_value_info("labels_float", TensorProto.FLOAT, ["num_prompts", "num_points"])
    model = _model([labels], [out], [helper.make_node("Cast", ["point_labels"], ["labels_float"], to=1)])
    problems = check_graph(model, "decoder").problems
    assert [p.check for p in problems] == ["input dtype"]
    assert "'point_labels' is int64" in problems[0].message and "int32" in problems[0].message


def test_dynamic_dim_without_profile_is_refused():
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["num_images", 3, 8, 8])
    out = helper.make_tensor_value_info("twice", TensorProto.FLOAT, ["num_images", 3, 8, 8])
    model = _model([image], [out], [helper.make_node("Add", ["image", "image"], ["twice"])])
    problems = check_graph(model).problems
    assert len(problems) == 1 and problems[0].check == "profile"
    assert "'num_images'" in problems[0].message and "input 'image', axis 0" in problems[0].message
    widened = {**TRT_PROFILES, "num_images": TRT_PROFILES["num_crops"]}
    assert check_graph(model, profiles=widened).ready


def test_unsupported_attributes_opset_and_int64_weights_are_refused():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 8, 8])
    scales = helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 2, 2])
    big = helper.make_tensor("big", TensorProto.INT64, [1], [2**40])
    resize = helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="linear", antialias=1)
    unused_add = helper.make_node("Add", ["big", "big"], ["big2"])
    model = _model([x], [y], [resize, unused_add], [scales, big], opset=21)
    messages = "\n".join(f"{p.check}: {p.message}" for p in check_graph(model).problems)
    assert "antialias=1" in messages
    assert "opset 21 outside" in messages
    assert "'big' holds 1099511627776, outside int32 (used by Add input 0, Add input 1)" in messages


def test_slice_ends_beyond_int32_are_accepted():
    # The exporter writes INT64_MAX for "to the end"; ONNX clamps it, so the int32 cast keeps the meaning.
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 5])
    consts = [
        helper.make_tensor("starts", TensorProto.INT64, [1], [1]),
        helper.make_tensor("ends", TensorProto.INT64, [1], [2**63 - 1]),
        helper.make_tensor("axes", TensorProto.INT64, [1], [1]),
    ]
    model = _model([x], [y], [helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["y"])], consts)
    assert check_graph(model).ready


def test_engine_profiles_and_fp32_layers_from_the_real_decoder(artifacts):
    manifest = read_manifest(artifacts)
    shapes = profile_shapes(manifest.graph("sam2_decoder")["inputs"])
    assert shapes["point_labels"] == [[1, 1], [64, 3], [512, 8]]
    assert shapes["mask_input"][2] == [512, 1, 256, 256] and "image_embed" not in shapes
    assert profile_shapes(manifest.graph("sam2_encoder")["inputs"]) == {}
    scopes = fp32_scopes(onnx.load(str(manifest.graph_path("sam2_decoder"))))
    # SAM2's LayerNorm2d is written out by hand (ReduceMean ... Sqrt): its whole module scope stays fp32.
    assert "/output_upscaling.1/" in scopes
    assert keeps_fp32("/output_upscaling.1/Pow", "LayerType.ELEMENTWISE", scopes)
    assert keeps_fp32("/transformer/layers.0/norm1/LayerNormalization", "LayerType.NORMALIZATION", scopes)
    assert keeps_fp32("anything", "LayerType.SOFTMAX", ())
    assert not keeps_fp32(
        "/transformer/layers.0/self_attn/q_proj/MatMul", "LayerType.MATRIX_MULTIPLY", scopes
    )


def test_profile_choice_by_prompt_count():
    profiles = [
        {"point_labels": [[1, 1], [8, 3], [16, 8]]},
        {"point_labels": [[1, 1], [64, 3], [512, 8]]},
    ]
    assert choose_profile(profiles, {"point_labels": (5, 3)}) == 0  # the narrowest profile that fits
    assert choose_profile(profiles, {"point_labels": (300, 3)}) == 1
    assert choose_profile([], {"image": (1, 3, 1024, 1024)}) == 0  # static engine (the SAM2 encoder)
    with pytest.raises(ClipsamError, match="outside every engine profile"):
        choose_profile(profiles, {"point_labels": (600, 3)})


def test_mismatched_engine_is_refused_in_one_line():
    entry = {
        "file": "sam2_decoder.engine",
        "tensorrt_version": "10.3.0",
        "gpu": {"name": "NVIDIA L4", "compute_capability": "8.9"},
    }
    check_engine_matches(entry, "10.3.0", GpuIdentity("NVIDIA L4", "8.9"))
    with pytest.raises(
        EngineMismatchError, match=r"built with TensorRT 10\.3\.0, this is TensorRT 10\.7\.0"
    ) as err:
        check_engine_matches(entry, "10.7.0", GpuIdentity("NVIDIA L4", "8.9"))
    assert "\n" not in str(err.value)
    with pytest.raises(
        EngineMismatchError, match=r"built for NVIDIA L4 \(sm 8\.9\), this GPU is NVIDIA H100"
    ):
        check_engine_matches(entry, "10.3.0", GpuIdentity("NVIDIA H100 80GB HBM3", "9.0"))


def test_build_engine_without_tensorrt_says_how_to_install(artifacts, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # blocks the import, as on a machine without TensorRT
    with pytest.raises(ClipsamError) as err:
        build_engines(artifacts)
    assert str(err.value) == "TensorRT is not installed (pip install '.[gpu]' on an NVIDIA machine)"
