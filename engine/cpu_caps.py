"""What this CPU can run fast, from its /proc/cpuinfo flags, and which fast-mode mechanism that selects.

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
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

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


@lru_cache(maxsize=1)
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
