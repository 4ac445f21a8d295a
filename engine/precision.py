"""`--precision`: what this CPU can run fast, from its /proc/cpuinfo flags, and which fast-mode mechanism
that selects.

The selection is a pure function of the flag set (`capability_class`, `fast_mechanism`), so tests can feed
any CPU's flags; `cpu_flags()` reads this machine's. Classes, best first, and their mechanism for a folder
exported with `--int8`:

| class | flags (any of) | `--precision fast` mechanism |
|---|---|---|
| `amx` | amx_bf16 | "int8-static": the static int8 encoder copies on OpenVINO, their float layers in bf16 |
| `avx512-bf16` | avx512_bf16 | "int8-static" (same) |
| `vnni` | avx512_vnni, avx_vnni | "int8-static", the float layers in fp32 |
| `avx2` | avx2 | "int8": the dynamic int8 SAM2 encoder copy on onnxruntime (U8U8: no 16-bit saturation) |
| `baseline` | none of the above | "int8" |

Without the static copies (a folder exported without `--int8`, or before them), the bf16 classes use "bf16":
OpenVINO's bf16 inference precision on the fp32 encoder graphs. "int8-static" and "bf16" need OpenVINO
importable; without it the choice falls back to "int8". The plan (`plan_precision`) is recorded in the
pipeline's "models" (JSON output, bench record), so the mechanism a run used is always visible, never
silent. Speed and agreement of each mechanism: benchmarks/README.md.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from clipsam.engine.errors import ClipsamError
from clipsam.engine.manifest import INT8_GRAPHS, STATIC_INT8_GRAPHS

CAPABILITY_CLASSES = ("amx", "avx512-bf16", "vnni", "avx2", "baseline")
FAST_MECHANISMS = ("int8-static", "bf16", "int8")
_CLASS_FLAGS = (
    ("amx", ("amx_bf16",)),
    ("avx512-bf16", ("avx512_bf16",)),
    ("vnni", ("avx512_vnni", "avx_vnni")),
    ("avx2", ("avx2",)),
)
BF16_CLASSES = ("amx", "avx512-bf16")
# Classes with int8 dot products (VNNI): every CPU with amx_bf16 or avx512_bf16 also has avx512_vnni.
VNNI_CLASSES = ("amx", "avx512-bf16", "vnni")


def parse_cpu_flags(cpuinfo_text: str) -> frozenset[str]:
    """The `flags` words of /proc/cpuinfo text (x86 "flags", ARM "Features"), as a set, lower case."""
    flags: set[str] = set()
    for line in cpuinfo_text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.lower().split())
    return frozenset(flags)


def cpu_flags(cpuinfo: Path | str = "/proc/cpuinfo") -> frozenset[str]:
    """This machine's CPU flags (empty where /proc/cpuinfo cannot be read, e.g. macOS: class "baseline")."""
    try:
        return parse_cpu_flags(Path(cpuinfo).read_text(errors="replace"))
    except OSError:
        return frozenset()


def capability_class(flags: Iterable[str]) -> str:
    """The best class in CAPABILITY_CLASSES whose flags are present (e.g. {"avx2", "avx512_bf16"} →
    "avx512-bf16")."""
    present = {flag.lower() for flag in flags}
    for name, needed in _CLASS_FLAGS:
        if present.intersection(needed):
            return name
    return "baseline"


def fast_mechanism(capability: str, openvino_available: bool = True, has_static_int8: bool = True) -> str:
    """The `--precision fast` mechanism for a capability class (see the module table): "int8-static" on
    VNNI classes when OpenVINO and the static copies are there, else "bf16" on bf16 classes with OpenVINO,
    else "int8"."""
    if capability not in CAPABILITY_CLASSES:
        raise ValueError(f"unknown capability class {capability!r}; one of {CAPABILITY_CLASSES}")
    if openvino_available and capability in VNNI_CLASSES and has_static_int8:
        return "int8-static"
    return "bf16" if capability in BF16_CLASSES and openvino_available else "int8"


def this_capability_class() -> str:
    """capability_class(cpu_flags()): this machine's class."""
    return capability_class(cpu_flags())


# bf16 graphs: the two encoders. The decoder stays fp32 (see benchmarks/README.md, "fast mode").
BF16_GRAPHS = ("sclip_tower", "sam2_encoder")
MECHANISM_CHOICES = ("auto", *FAST_MECHANISMS)


@dataclass(frozen=True)
class PrecisionPlan:
    """mechanism: "fp32" (exact), "int8-static", "bf16" or "int8". capability: the CPU class it was chosen
    for. copies: {graph role: the manifest name of the reduced-precision copy that replaces it}. openvino:
    {graph role: inference precision} for the roles compiled on OpenVINO ("bf16" / "fp32") whatever the
    backend; every other graph runs at fp32 on the backend."""

    mechanism: str
    capability: str
    copies: Mapping[str, str] = field(default_factory=dict)
    openvino: Mapping[str, str] = field(default_factory=dict)

    @property
    def description(self) -> str:
        """The pipeline's precision in words, e.g. "bf16 sclip_tower + sam2_encoder, fp32 elsewhere"."""
        if self.mechanism == "fp32":
            return "fp32"
        names = " + ".join(self.copies or self.openvino)
        if self.mechanism == "int8-static":
            rest = "bf16" if "bf16" in self.openvino.values() else "fp32"
            return f"int8 (static) {names} on OpenVINO, their float layers {rest}; fp32 elsewhere"
        return f"{self.mechanism} {names}, fp32 elsewhere"

    def record(self) -> dict:
        """The fields the pipeline's "models" record carries."""
        return {"precision": self.description, "fast_mechanism": self.mechanism, "cpu_class": self.capability}


def openvino_available() -> bool:
    return importlib.util.find_spec("openvino") is not None


def plan_precision(
    precision: str,
    backend: str,
    mechanism: str = "auto",
    capability: str | None = None,
    graphs: Collection[str] | None = None,
) -> PrecisionPlan:
    """The PrecisionPlan for `precision` ("exact" / "fast") on `backend` ("onnxruntime" / "openvino" / …).

    mechanism: "auto" (from the CPU class and the folder), or one of FAST_MECHANISMS to force it (benchmarks
    compare them). capability: a class from CAPABILITY_CLASSES (default: this machine's). graphs: the graph
    names the artifacts folder has (None: assume every copy is there); "auto" picks "int8-static" only where
    the folder has its copies. Raises ClipsamError when the mechanism cannot run on `backend`.
    """
    capability = capability or this_capability_class()
    if precision == "exact":
        return PrecisionPlan("fp32", capability)
    if mechanism not in MECHANISM_CHOICES:
        raise ClipsamError(
            f"unknown fast mechanism '{mechanism}'; choose one of: {', '.join(MECHANISM_CHOICES)}"
        )
    if mechanism == "auto":
        # the static copies of the encoders the folder has (an `--only` export has one)
        wanted = {copy for role, copy in STATIC_INT8_GRAPHS.items() if graphs is None or role in graphs}
        has_static = graphs is None or (bool(wanted) and wanted <= set(graphs))
        mechanism = fast_mechanism(capability, openvino_available(), has_static)
    if mechanism in ("bf16", "int8-static") and not openvino_available():
        raise ClipsamError(f"the {mechanism} fast mode runs on OpenVINO: run `pip install openvino`")
    if mechanism == "int8-static":
        inner = "bf16" if capability in BF16_CLASSES else "fp32"
        return PrecisionPlan(
            "int8-static", capability, STATIC_INT8_GRAPHS, {role: inner for role in STATIC_INT8_GRAPHS}
        )
    if mechanism == "bf16":
        return PrecisionPlan("bf16", capability, openvino={role: "bf16" for role in BF16_GRAPHS})
    if backend != "onnxruntime":
        raise ClipsamError(
            f"--precision fast on this CPU ({capability}: no VNNI, no native bf16) uses int8 graphs on "
            f"onnxruntime, not {backend}: use --backend onnxruntime with artifacts exported with --int8"
        )
    return PrecisionPlan("int8", capability, copies=INT8_GRAPHS)
