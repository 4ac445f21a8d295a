"""`--precision`: what this CPU can run fast, from its /proc/cpuinfo flags, and which fast-mode mechanism
that selects.

The selection is a pure function of the flag set (`capability_class`, `fast_mechanism`), so tests can feed
any CPU's flags; `cpu_flags()` reads this machine's. Classes, best first:

| class | flags (any of) | `--precision fast` mechanism |
|---|---|---|
| `amx` | amx_bf16 | "bf16": OpenVINO bf16 inference precision on the exported ONNX graphs |
| `avx512-bf16` | avx512_bf16 | "bf16" (same) |
| `vnni` | avx512_vnni, avx_vnni | "int8": the int8 SAM2 encoder copy on onnxruntime (VNNI dot products) |
| `avx2` | avx2 | "int8" (same graph; without VNNI the U8U8 kernels avoid 16-bit saturation) |
| `baseline` | none of the above | "int8" |

bf16 also needs OpenVINO importable; `fast_mechanism(..., openvino_available=False)` falls back to "int8"
and the pipeline reports the mechanism it ran, so the fallback is visible, never silent.

Which graphs run in reduced precision, and how (`plan_precision`): the mechanism follows the CPU's
capability class: "bf16" runs BF16_GRAPHS on OpenVINO
with inference precision bf16 (the same ONNX files; the rest stays fp32 on the chosen backend); "int8" swaps
in the INT8_GRAPHS copies written by `clipsam export --int8` (onnxruntime only). The plan is recorded in the
pipeline's "models" (JSON output, bench record), so the mechanism a run used is always visible.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from clipsam.engine.errors import ClipsamError
from clipsam.engine.manifest import INT8_GRAPHS

CAPABILITY_CLASSES = ("amx", "avx512-bf16", "vnni", "avx2", "baseline")
FAST_MECHANISMS = ("bf16", "int8")
_CLASS_FLAGS = (
    ("amx", ("amx_bf16",)),
    ("avx512-bf16", ("avx512_bf16",)),
    ("vnni", ("avx512_vnni", "avx_vnni")),
    ("avx2", ("avx2",)),
)
BF16_CLASSES = ("amx", "avx512-bf16")


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


def fast_mechanism(capability: str, openvino_available: bool = True) -> str:
    """The `--precision fast` mechanism for a capability class: "bf16" or "int8" (see the module table)."""
    if capability not in CAPABILITY_CLASSES:
        raise ValueError(f"unknown capability class {capability!r}; one of {CAPABILITY_CLASSES}")
    return "bf16" if capability in BF16_CLASSES and openvino_available else "int8"


def this_capability_class() -> str:
    """capability_class(cpu_flags()): this machine's class."""
    return capability_class(cpu_flags())


# bf16 graphs: the two encoders. The decoder stays fp32 (see benchmarks/README.md, "fast mode").
BF16_GRAPHS = ("sclip_tower", "sam2_encoder")
MECHANISM_CHOICES = ("auto", *FAST_MECHANISMS)


@dataclass(frozen=True)
class PrecisionPlan:
    """mechanism: "fp32" (exact), "bf16" or "int8". capability: the CPU class it was chosen for.
    bf16_graphs: graph names to compile on OpenVINO at bf16. int8_graphs: {graph: its int8 copy's name}."""

    mechanism: str
    capability: str
    bf16_graphs: tuple[str, ...] = ()
    int8_graphs: dict[str, str] = field(default_factory=dict)

    @property
    def description(self) -> str:
        """The pipeline's precision in words, e.g. "bf16 sclip_tower + sam2_encoder, fp32 elsewhere"."""
        if self.mechanism == "fp32":
            return "fp32"
        names = self.bf16_graphs or tuple(self.int8_graphs)
        return f"{self.mechanism} {' + '.join(names)}, fp32 elsewhere"

    def record(self) -> dict:
        """The fields the pipeline's "models" record carries."""
        return {"precision": self.description, "fast_mechanism": self.mechanism, "cpu_class": self.capability}


def openvino_available() -> bool:
    return importlib.util.find_spec("openvino") is not None


def plan_precision(
    precision: str, backend: str, mechanism: str = "auto", capability: str | None = None
) -> PrecisionPlan:
    """The PrecisionPlan for `precision` ("exact" / "fast") on `backend` ("onnxruntime" / "openvino" / …).

    mechanism: "auto" (from the CPU class), or "bf16" / "int8" to force one (benchmarks compare them).
    capability: a class from CAPABILITY_CLASSES (default: this machine's). Raises ClipsamError when
    the forced or chosen mechanism cannot run on `backend`.
    """
    capability = capability or this_capability_class()
    if precision == "exact":
        return PrecisionPlan("fp32", capability)
    if mechanism not in MECHANISM_CHOICES:
        raise ClipsamError(
            f"unknown fast mechanism '{mechanism}'; choose one of: {', '.join(MECHANISM_CHOICES)}"
        )
    if mechanism == "auto":
        mechanism = fast_mechanism(capability, openvino_available())
    if mechanism == "bf16":
        if not openvino_available():
            raise ClipsamError("the bf16 fast mode runs on OpenVINO: run `pip install openvino`")
        return PrecisionPlan("bf16", capability, bf16_graphs=BF16_GRAPHS)
    if backend != "onnxruntime":
        raise ClipsamError(
            f"--precision fast on this CPU ({capability}: no native bf16) uses int8 graphs on onnxruntime, "
            f"not {backend}: use --backend onnxruntime with artifacts exported with --int8"
        )
    return PrecisionPlan("int8", capability, int8_graphs=dict(INT8_GRAPHS))
