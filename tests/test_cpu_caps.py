"""Capability classes from CPU flags and the fast-mode plan each class selects (fake flags: every class is
tested on any machine; the plans' graphs run in tests/test_fast_mode.py on this CPU's own class)."""

from __future__ import annotations

import pytest

from clipsam.engine import precision as fast_mode
from clipsam.engine.errors import ClipsamError
from clipsam.engine.manifest import INT8_GRAPHS, STATIC_INT8_GRAPHS
from clipsam.engine.precision import (
    BF16_GRAPHS,
    CAPABILITY_CLASSES,
    capability_class,
    cpu_flags,
    fast_mechanism,
    parse_cpu_flags,
    plan_precision,
)

AVX2 = {"sse4_2", "fma", "avx", "avx2"}
FLAGS_BY_CLASS = {
    "amx": AVX2 | {"avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"},
    "avx512-bf16": AVX2 | {"avx512f", "avx512_vnni", "avx512_bf16"},
    "vnni": AVX2 | {"avx512f", "avx512_vnni"},
    "avx2": AVX2,
    "baseline": {"sse4_2"},
}
CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9R14
flags\t\t: fpu sse4_2 avx2 avx512f avx512_vnni avx512_bf16
processor\t: 1
flags\t\t: fpu sse4_2 avx2 avx512f avx512_vnni avx512_bf16
"""


def test_cpuinfo_flags_are_parsed_per_word():
    flags = parse_cpu_flags(CPUINFO)
    assert flags == {"fpu", "sse4_2", "avx2", "avx512f", "avx512_vnni", "avx512_bf16"}
    assert capability_class(flags) == "avx512-bf16"
    assert parse_cpu_flags("model name\t: some ARM\nFeatures\t: fp asimd bf16\n") == {"fp", "asimd", "bf16"}


@pytest.mark.parametrize("expected", CAPABILITY_CLASSES)
def test_each_flag_set_maps_to_its_class(expected):
    assert capability_class(FLAGS_BY_CLASS[expected]) == expected
    assert capability_class({flag.upper() for flag in FLAGS_BY_CLASS[expected]}) == expected


def test_avx_vnni_without_avx512_is_the_vnni_class():
    assert capability_class(AVX2 | {"avx_vnni"}) == "vnni"


@pytest.mark.parametrize(
    "capability, mechanism, without_static",
    [
        ("amx", "int8-static", "bf16"),
        ("avx512-bf16", "int8-static", "bf16"),
        ("vnni", "int8-static", "int8"),
        ("avx2", "int8", "int8"),
        ("baseline", "int8", "int8"),
    ],
)
def test_fast_mechanism_per_class(capability, mechanism, without_static):
    assert fast_mechanism(capability) == mechanism
    assert fast_mechanism(capability, has_static_int8=False) == without_static
    assert fast_mechanism(capability, openvino_available=False) == "int8"


def test_unknown_class_is_refused():
    with pytest.raises(ValueError, match="unknown capability class"):
        fast_mechanism("avx1024")


def test_this_machine_has_a_class():
    assert capability_class(cpu_flags()) in CAPABILITY_CLASSES


@pytest.mark.parametrize("capability", CAPABILITY_CLASSES)
def test_plan_per_class_on_onnxruntime(capability, monkeypatch):
    monkeypatch.setattr(fast_mode, "openvino_available", lambda: True)
    exact = plan_precision("exact", "onnxruntime", capability=capability)
    assert (exact.mechanism, dict(exact.copies), dict(exact.openvino)) == ("fp32", {}, {})
    assert exact.record() == {"precision": "fp32", "fast_mechanism": "fp32", "cpu_class": capability}
    plan = plan_precision("fast", "onnxruntime", capability=capability)
    inner = "bf16" if capability in ("amx", "avx512-bf16") else "fp32"
    if capability in ("amx", "avx512-bf16", "vnni"):
        assert (plan.mechanism, dict(plan.copies)) == ("int8-static", dict(STATIC_INT8_GRAPHS))
        assert dict(plan.openvino) == {"sclip_tower": inner, "sam2_encoder": inner}
        assert plan.description == (
            "int8 (static) sclip_tower + sam2_encoder on OpenVINO, "
            f"their float layers {inner}; fp32 elsewhere"
        )
    else:
        assert (plan.mechanism, dict(plan.copies), dict(plan.openvino)) == ("int8", dict(INT8_GRAPHS), {})
        assert plan.description == "int8 sam2_encoder, fp32 elsewhere"
    assert plan.record()["fast_mechanism"] == plan.mechanism and plan.record()["cpu_class"] == capability
    # a one-model folder with its static copy
    sam2_only = ("sam2_encoder", "sam2_decoder", "sam2_encoder_int8", "sam2_encoder_int8_static")
    expected = "int8-static" if capability in ("amx", "avx512-bf16", "vnni") else "int8"
    assert (
        plan_precision("fast", "onnxruntime", capability=capability, graphs=sam2_only).mechanism == expected
    )
    # a folder without the static copies: bf16 on OpenVINO where the CPU has it, else the dynamic copy
    older = plan_precision("fast", "onnxruntime", capability=capability, graphs=("sam2_encoder_int8",))
    if capability in ("amx", "avx512-bf16"):
        assert (older.mechanism, dict(older.copies)) == ("bf16", {})
        assert dict(older.openvino) == dict.fromkeys(BF16_GRAPHS, "bf16")
        assert older.description == "bf16 sclip_tower + sam2_encoder, fp32 elsewhere"
    else:
        assert older.mechanism == "int8"


def test_bf16_class_without_openvino_falls_back_to_int8_visibly(monkeypatch):
    monkeypatch.setattr(fast_mode, "openvino_available", lambda: False)
    plan = plan_precision("fast", "onnxruntime", capability="amx")
    assert plan.mechanism == "int8" and plan.record()["fast_mechanism"] == "int8"
    with pytest.raises(ClipsamError, match="pip install openvino"):
        plan_precision("fast", "onnxruntime", mechanism="bf16", capability="amx")


def test_openvino_fast_needs_a_vnni_or_bf16_class(monkeypatch):
    monkeypatch.setattr(fast_mode, "openvino_available", lambda: True)
    assert plan_precision("fast", "openvino", capability="avx512-bf16").mechanism == "int8-static"
    assert plan_precision("fast", "openvino", capability="avx512-bf16", graphs=()).mechanism == "bf16"
    with pytest.raises(ClipsamError, match=r"avx2: no VNNI, no native bf16.*--backend onnxruntime"):
        plan_precision("fast", "openvino", capability="avx2")
    with pytest.raises(ClipsamError, match="unknown fast mechanism"):
        plan_precision("fast", "onnxruntime", mechanism="fp8", capability="avx2")
