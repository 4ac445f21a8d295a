"""The record of a `clipsam bench` run: statistics, agreement, machine, versions, and the regression gate.

The gate compares a run with a stored record by the speedup over the reference measured in the same run
(stable on shared machines); absolute latencies are compared only when both runs lack a reference and come
from the same model on the same machine class.

Tiny stages: a stage's gated time is its p50 in ours (latency gate) or the smaller of its ours and reference
p50 (speedup gate: the smaller operand's timer noise dominates the ratio). A stage whose gated time is under
MIN_GATED_MS in BOTH records is not gated and is listed in `GateReport.not_gated`; one that was tiny in the
baseline but grew past MIN_GATED_MS (or the reverse) is gated.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipsam.engine.bench.measure import PROMPT_CAP, BenchConfig, Measurement
from clipsam.engine.errors import ClipsamError
from clipsam.engine.manifest import package_versions
from clipsam.engine.pipeline import Pipeline
from clipsam.engine.precision import capability_class
from clipsam.engine.types import DenseMap, MaskCandidates, RleCandidates, SegmentationResult
from clipsam.kernels import rle as rle_codec

SCHEMA, SCHEMA_VERSION = "clipsam-bench", 1
MIN_GATED_MS = 2.0  # stages under this in both records are listed as not gated (timer noise)
_VERSIONED = ("clipsam", "numpy", "numba", "onnxruntime", "torch", "open_clip_torch", "sam2", "onnx")


def parse_fraction(text: str) -> float:
    """ "10%" or "0.1" → 0.1 (a fraction in (0, 1))."""
    try:
        value = float(text[:-1]) / 100 if text.strip().endswith("%") else float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 1:
        raise ClipsamError(f"bad --max-regression '{text}': give a percentage such as 10% (or 0.1)")
    return value


def stage_stats(samples: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per stage (in pipeline order) p50 / p90 / p99 / mean / min of the timed runs, milliseconds."""
    stats = {}
    for stage in samples[0]:
        if stage.startswith("num_"):
            continue
        values = np.array([s.get(stage, 0.0) for s in samples], np.float64)
        p50, p90, p99 = np.percentile(values, [50, 90, 99])
        stats[stage] = {"p50": p50, "p90": p90, "p99": p99, "mean": values.mean(), "min": values.min()}
    return {stage: {k: float(v) for k, v in row.items()} for stage, row in stats.items()}


def throughput(samples: list[dict[str, float]]) -> dict[str, float]:
    """images/s and prompts/s over all timed runs of the measured stage, and the mean prompt count."""
    seconds = sum(s["total"] for s in samples) / 1000.0
    prompts = sum(s.get("num_prompts", 0.0) for s in samples)
    return {
        "images_per_s": len(samples) / seconds if seconds > 0 else float("inf"),
        "prompts_per_s": prompts / seconds if seconds > 0 else float("inf"),
        "num_prompts": prompts / len(samples),
    }


def speedups(ours: dict[str, dict], reference: dict[str, dict]) -> dict[str, float]:
    """Reference p50 ÷ ours p50 per stage measured by both (> 1: ours is faster)."""
    return {
        stage: reference[stage]["p50"] / row["p50"]
        for stage, row in ours.items()
        if stage in reference and row["p50"] > 0
    }


def agreement(ours: object, reference: object) -> dict | None:
    """How far a speedup changed the output: per-segment / per-prompt mask IoU, or dense-map pixel match."""
    if isinstance(ours, SegmentationResult) and isinstance(reference, SegmentationResult):
        return segment_agreement(ours, reference)
    candidates = (MaskCandidates, RleCandidates)
    if isinstance(ours, candidates) and isinstance(reference, candidates) and len(ours):
        pairs = zip(_rles(ours), _rles(reference), strict=True)
        iou = np.array([rle_codec.iou([a], [b], [0])[0, 0] for a, b in pairs])
        return {"kind": "per-prompt mask IoU", "mean_iou": float(iou.mean()), "min_iou": float(iou.min())}
    if isinstance(ours, DenseMap) and isinstance(reference, DenseMap):
        return {"kind": "dense-map pixel agreement", "fraction": float((ours.pred == reference.pred).mean())}
    return None


def _rles(candidates) -> list:
    """COCO RLEs (bytes counts) of MaskCandidates or RleCandidates."""
    if isinstance(candidates, RleCandidates):
        return candidates.rles
    return rle_codec.encode_batch(np.ascontiguousarray(candidates.masks).view(np.uint8))


def segment_agreement(ours: SegmentationResult, reference: SegmentationResult) -> dict:
    """Each reference segment's best mask IoU with an ours segment of the same class (0 when none)."""
    best = []
    for seg in reference.segments:
        same = [o.rle for o in ours.segments if o.class_id == seg.class_id]
        best.append(float(np.max(rle_codec.iou(same, [seg.rle], [0]))) if same else 0.0)
    return {
        "kind": "per-segment mask IoU",
        "mean_iou": float(np.mean(best)) if best else 1.0,
        "min_iou": float(np.min(best)) if best else 1.0,
        "segments_ours": len(ours.segments),
        "segments_reference": len(reference.segments),
    }


def machine_info() -> dict:
    """CPU model, cores, ISA extensions that decide reduced-precision speed, and the GPU if torch sees one."""
    cpu_model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                cpu_model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass  # not Linux: platform's name stands
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info = {
        "cpu_model": cpu_model,
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "amx_bf16": "amx_bf16" in flags,
        "avx512f": "avx512f" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
        "avx512_vnni": "avx512_vnni" in flags,
        "capability_class": capability_class(flags),
        "platform": platform.platform(),
        "gpu": None,
    }
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def machine_class(machine: dict) -> str:
    """ "CPU model xCORES [capability class] (+ GPU)": records of different classes are not compared."""
    capability = f" [{machine['capability_class']}]" if machine.get("capability_class") else ""
    return f"{machine['cpu_model']} x{machine['usable_cores']}{capability}" + (
        f" + {machine['gpu']}" if machine["gpu"] else ""
    )


def library_versions() -> dict[str, str | None]:
    return {"python": platform.python_version(), **package_versions(_VERSIONED)}


def peak_memory_mb() -> dict[str, float | None]:
    """Peak RSS of this process (both pipelines when comparing) and peak torch GPU memory, MiB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss_mb = rss / 2**20 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux
    torch = sys.modules.get("torch")
    gpu = (
        torch.cuda.max_memory_allocated() / 2**20 if torch is not None and torch.cuda.is_available() else None
    )
    return {"peak_rss_mb": rss_mb, "gpu_peak_mb": gpu}


def describe_pipeline(backend: str, pipeline: Pipeline) -> dict:
    """The record's side: `backend` (the bench name) and how the pipeline runs (its "models" record; a
    pipeline without a "precision" entry, the torch reference, runs fp32)."""
    return {
        "backend": backend,
        "precision": pipeline.models.get("precision", "fp32"),
        "decoder": pipeline.models.get("decoder", "sam2 per-prompt loop"),
        "providers": list(pipeline.models.get("providers", [])),
        "models": pipeline.models,
        "random_weights": bool(pipeline.random_weights),
    }


def build_record(
    config: BenchConfig,
    images: str,
    pipelines: dict[str, dict],
    measurement: Measurement,
) -> dict:
    """The JSON record of a run. pipelines: {"ours": describe_pipeline(...), "reference": ...}."""
    results = {}
    for name, description in pipelines.items():
        samples = measurement.samples[name]
        results[name] = {
            **description,
            "stages": stage_stats(samples),
            **throughput(samples),
            "samples_ms": samples,
        }
    record = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "created_unix": int(time.time()),
        "config": {**config.__dict__, "images": images, "prompt_cap": PROMPT_CAP},
        "machine": machine_info(),
        "versions": library_versions(),
        "memory": peak_memory_mb(),
        **results,
        "reference": results.get("reference"),
        "speedup": None,
        "agreement": None,
    }
    if "reference" in results:
        record["speedup"] = speedups(results["ours"]["stages"], results["reference"]["stages"])
        record["agreement"] = agreement(measurement.outputs["ours"], measurement.outputs["reference"])
    return record


def write_record(path: Path | str, record: dict) -> None:
    """Write the record as JSON, atomically (a failed run leaves the old file)."""
    from clipsam.engine.image_io import atomic_output

    with atomic_output(path, "w") as stream:
        json.dump(record, stream, indent=1)
        stream.write("\n")


def read_record(path: Path | str) -> dict:
    """A stored `clipsam bench --json` record; ClipsamError (one line) when unreadable or not one."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ClipsamError(f"cannot read baseline '{path}' ({err}): give a file written by --json") from err
    if not isinstance(record, dict) or record.get("schema") != SCHEMA:
        raise ClipsamError(f"'{path}' is not a clipsam bench record: give a file written by --json")
    if record.get("schema_version") != SCHEMA_VERSION:
        raise ClipsamError(
            f"baseline '{path}' has bench schema {record.get('schema_version')}, this clipsam writes "
            f"{SCHEMA_VERSION}: record a new baseline"
        )
    return record


@dataclass(frozen=True)
class StageCheck:
    """One gated figure: kind "speedup" (higher is better) or "latency_ms" (p50, lower is better)."""

    stage: str
    kind: str
    baseline: float
    current: float
    regressed: bool

    @property
    def change(self) -> float:
        """Relative change in the good direction: -0.15 = 15 % worse."""
        speedup = self.kind == "speedup"
        better, worse = (self.current, self.baseline) if speedup else (self.baseline, self.current)
        return better / worse - 1.0 if worse > 0 else float("inf")


@dataclass(frozen=True)
class GateReport:
    """checks: the gated stages; not_gated: stages under MIN_GATED_MS in both records (module docstring)."""

    checks: tuple[StageCheck, ...]
    warnings: tuple[str, ...]
    max_regression: float
    not_gated: tuple[str, ...] = ()

    @property
    def regressed(self) -> bool:
        return any(check.regressed for check in self.checks)

    def to_json(self) -> dict:
        return {
            "max_regression": self.max_regression,
            "regressed": self.regressed,
            "warnings": list(self.warnings),
            "min_gated_ms": MIN_GATED_MS,
            "not_gated": list(self.not_gated),
            "checks": [{**check.__dict__, "change": check.change} for check in self.checks],
        }


def compare_to_baseline(record: dict, baseline: dict, max_regression: float) -> GateReport:
    """Gate `record` against `baseline`: a stage regresses when its speedup over the reference fell by more
    than `max_regression` (or, without references on the same model and machine class, its p50 rose)."""
    if record["config"]["stage"] != baseline["config"]["stage"]:
        raise ClipsamError(
            f"the baseline measured --stage {baseline['config']['stage']}, this run "
            f"--stage {record['config']['stage']}: compare like with like"
        )
    warnings = _comparability_warnings(record, baseline)
    if record.get("speedup") and baseline.get("speedup"):
        sides = ("ours", "reference")
        gated, not_gated = _split_tiny_stages(record, baseline, sides)
        checks = _speedup_checks(record, baseline, gated, max_regression)
    elif warnings:
        raise ClipsamError(
            "the baseline is from another model or machine class, so only speedups compare, and "
            f"{'this run' if not record.get('speedup') else 'the baseline'} has none: "
            "record both with --compare-to torch"
        )
    else:
        warnings.append("no speedups in both records (--compare-to torch): comparing absolute latencies")
        gated, not_gated = _split_tiny_stages(record, baseline, ("ours",))
        checks = _latency_checks(record, baseline, gated, max_regression)
    return GateReport(tuple(checks), tuple(warnings), max_regression, tuple(not_gated))


def _comparability_warnings(record: dict, baseline: dict) -> list[str]:
    warnings = []
    now, then = machine_class(record["machine"]), machine_class(baseline["machine"])
    if now != then:
        warnings.append(f"baseline machine '{then}' differs from this one '{now}': comparing speedups only")
    model_now, model_then = _model_names(record["ours"]), _model_names(baseline["ours"])
    if model_now != model_then:
        warnings.append(f"baseline model {model_then} differs from this run's {model_now}: speedups only")
    return warnings


def _model_names(result: dict) -> tuple[str, str]:
    models = result.get("models", {})
    return (models.get("clip", {}).get("name", "?"), models.get("sam2", {}).get("name", "?"))


def _split_tiny_stages(record: dict, baseline: dict, sides: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(gated, not gated): the stages measured on every side of both records, in the run's stage order,
    split by the tiny-stage rule of the module docstring."""
    gated, tiny = [], []
    for stage in record["ours"]["stages"]:
        times = [_gated_time(rec, stage, sides) for rec in (record, baseline)]
        if None in times:
            continue
        (tiny if max(times) < MIN_GATED_MS else gated).append(stage)
    return gated, tiny


def _gated_time(record: dict, stage: str, sides: tuple[str, ...]) -> float | None:
    """The smallest p50 of `stage` over `sides` of one record (ms); None when a side lacks the stage."""
    stats = [record[side]["stages"].get(stage) for side in sides]
    return None if None in stats else min(row["p50"] for row in stats)


def _speedup_checks(record: dict, baseline: dict, stages: list[str], max_regression: float) -> list:
    checks = []
    for stage in stages:
        if stage in record["speedup"] and stage in baseline["speedup"]:
            then, now = baseline["speedup"][stage], record["speedup"][stage]
            checks.append(StageCheck(stage, "speedup", then, now, now < then * (1 - max_regression)))
    return checks


def _latency_checks(record: dict, baseline: dict, stages: list[str], max_regression: float) -> list:
    checks = []
    for stage in stages:
        then, now = baseline["ours"]["stages"][stage]["p50"], record["ours"]["stages"][stage]["p50"]
        checks.append(StageCheck(stage, "latency_ms", then, now, now > then * (1 + max_regression)))
    return checks
