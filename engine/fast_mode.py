"""Which graphs run in reduced precision, and how, for `--precision fast` on this CPU.

The mechanism follows the CPU's capability class (engine/cpu_caps.py): "bf16" runs BF16_GRAPHS on OpenVINO
with inference precision bf16 (the same ONNX files; the rest stays fp32 on the chosen backend); "int8" swaps
in the INT8_GRAPHS copies written by `clipsam export --int8` (onnxruntime only). The plan is recorded in the
pipeline's "models" (JSON output, bench record), so the mechanism a run used is always visible.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field

from clipsam.engine.cpu_caps import FAST_MECHANISMS, fast_mechanism, this_capability_class
from clipsam.engine.errors import ClipsamError
from clipsam.engine.manifest import INT8_GRAPHS

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
    capability: a class from cpu_caps.CAPABILITY_CLASSES (default: this machine's). Raises ClipsamError when
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
