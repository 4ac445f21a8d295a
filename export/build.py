"""`clipsam export`: the three ONNX graphs, the text features and the manifest, written into one folder.

Order matters for atomicity: the old manifest is removed first, each graph is written to a temp file and
renamed, and the manifest (with every graph's sha256) is written last. A folder whose export was interrupted
has no manifest, or one whose digests do not match, and the runtime refuses it.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipsam import __version__
from clipsam.engine.demo_scene import DEMO_VOCABULARY
from clipsam.engine.manifest import MANIFEST_NAME, file_digest, write_manifest
from clipsam.engine.sam2_transforms import SAM2_IMAGE_SIZE, SAM2_MEAN, SAM2_STD
from clipsam.engine.text_bank import TextBank
from clipsam.engine.transforms import CLIP_MEAN_255, CLIP_STD_255
from clipsam.engine.versions import package_versions
from clipsam.engine.vocabulary import BACKGROUND_SYNONYMS
from clipsam.export.clip_model import SclipModel, load_sclip
from clipsam.export.onnx_sam2_decoder import export_sam2_decoder
from clipsam.export.onnx_sam2_encoder import export_sam2_encoder
from clipsam.export.onnx_sclip import export_sclip_tower
from clipsam.export.onnx_utils import OPSET, io_specs, pin_output_dims_by_running
from clipsam.export.registry import DEFAULT_CLIP
from clipsam.export.sam2_fast_decoder import FAST_GRAPH, IMAGE_GRAPH, export_sam2_fast_decoder
from clipsam.export.sam2_model import Sam2Model, build_sam2_model

TEXT_DIR = "text"
DEFAULT_QUERIES = (*DEMO_VOCABULARY, *BACKGROUND_SYNONYMS)
_VERSIONED = ("torch", "onnx", "onnxruntime", "open_clip_torch", "sam2", "numpy", "numba")


@dataclass(frozen=True)
class ExportRequest:
    """What to export: the models' weights (checkpoints or seeded random init) and the vocabulary to embed."""

    out_dir: Path
    sam_model: str = "sam2.1-hiera-tiny"
    clip_checkpoint: Path | None = None
    sam_checkpoint: Path | None = None
    clip_random: bool = False
    sam_random: bool = False
    seed: int = 0
    queries: tuple[str, ...] = ()
    int8: bool = False  # also write int8 copies of the encoders (the fast precision, export/quantize.py)


def export_artifacts(request: ExportRequest, log=print) -> dict:
    """Export the three graphs, the text features and (last) the manifest; returns the manifest record."""
    out = Path(request.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST_NAME).unlink(missing_ok=True)
    sclip = load_sclip(request.clip_checkpoint, random_weights=request.clip_random, seed=request.seed)
    sam = build_sam2_model(
        request.sam_model, request.sam_checkpoint, random_weights=request.sam_random, seed=request.seed
    )
    graphs = {}
    for name, export in (
        ("sclip_tower", lambda path: export_sclip_tower(sclip, path)),
        ("sam2_encoder", lambda path: export_sam2_encoder(sam, path)),
        ("sam2_decoder", lambda path: export_sam2_decoder(sam, path)),
    ):
        start = time.perf_counter()
        report = export(out / f"{name}.onnx")
        graphs[name] = _graph_entry(out / f"{name}.onnx", report, time.perf_counter() - start)
        log(f"exported {name}.onnx in {graphs[name]['export_seconds']:.1f} s")
    graphs.update(_export_fast_decoder(sam, out, log))
    graphs["sclip_tower"].update(patch_size=sclip.patch_size, preprocessing=_clip_preprocessing(sclip))
    graphs["sam2_encoder"]["preprocessing"] = _sam2_preprocessing()
    embed_text(sclip, out / TEXT_DIR, (*DEFAULT_QUERIES, *request.queries))
    record = {
        "clipsam_version": __version__,
        "created_unix": int(time.time()),
        "random_weights": bool(request.clip_random or request.sam_random),
        "models": {"sclip": _model_entry(DEFAULT_CLIP, sclip, request), "sam2": _sam_entry(sam, request)},
        "graphs": graphs,
        "text_features": {"dir": TEXT_DIR, "templates": "openai-imagenet-80"},
        "versions": _versions(),
    }
    write_manifest(out, record)
    if request.int8:
        from clipsam.export.quantize import add_int8_graphs

        record["graphs"].update(add_int8_graphs(out, log))
    return record


def embed_text(sclip: SclipModel, text_dir: Path, queries: Sequence[str]) -> np.ndarray:
    """Compute (or reuse) the text features of `queries` into the artifacts' text bank."""
    import torch

    def encode(missing: list[str]) -> np.ndarray:
        with torch.inference_mode():
            return sclip.encode_queries(missing).float().numpy()

    unique = list(dict.fromkeys(queries))
    return TextBank(text_dir).get(sclip.weights_id, unique, encode)


def _export_fast_decoder(sam: Sam2Model, out: Path, log) -> dict:
    """The rewritten decoder (per-image graph + per-prompt graph; equal to sam2's decoder to ~2e-6)."""
    start = time.perf_counter()
    report = export_sam2_fast_decoder(sam, out)
    pin_output_dims_by_running(out / IMAGE_GRAPH)  # all its inputs are static; TensorRT needs static outputs
    report["image"] = {**report["image"], **io_specs(out / IMAGE_GRAPH)}
    seconds = time.perf_counter() - start
    entries = {}
    for name, key, filename in (
        ("sam2_decoder_image", "image", IMAGE_GRAPH),
        ("sam2_fast_decoder", "decoder", FAST_GRAPH),
    ):
        part = {**report[key], "parity": report["parity"]}
        entries[name] = _graph_entry(out / filename, part, seconds)
    log(f"exported {IMAGE_GRAPH} + {FAST_GRAPH} in {seconds:.1f} s")
    return entries


def _graph_entry(path: Path, report: dict, seconds: float) -> dict:
    io = report.get("io_specs") or {"inputs": report["inputs"], "outputs": report["outputs"]}
    return {
        "file": path.name,
        "bytes": path.stat().st_size,
        "sha256": file_digest(path),
        "opset": OPSET,
        "inputs": io["inputs"],
        "outputs": io["outputs"],
        "ops": report["op_census"],
        "parity_max_abs": report["parity"],
        "export_seconds": round(seconds, 2),
    }


def _clip_preprocessing(sclip: SclipModel) -> dict:
    return {
        "input": "uint8 RGB image",
        "resize": "short side to S (keep ratio, long side <= 2048), bilinear half-pixel, rounded to uint8",
        "scale": "0-255",
        "mean": [float(v) for v in CLIP_MEAN_255],
        "std": [float(v) for v in CLIP_STD_255],
        "crop": sclip.image_size,
        "stride": sclip.image_size // 2,
    }


def _sam2_preprocessing() -> dict:
    return {
        "input": "uint8 RGB image",
        "resize": f"square {SAM2_IMAGE_SIZE}x{SAM2_IMAGE_SIZE}, aspect not kept, bilinear with antialias "
        "(torchvision) on floats in [0, 1]",
        "scale": "0-1",
        "mean": [float(v) for v in SAM2_MEAN],
        "std": [float(v) for v in SAM2_STD],
        "size": SAM2_IMAGE_SIZE,
        "point_coords": "x * 1024 / W, y * 1024 / H",
    }


def _weights_text(random_weights: bool, seed: int, digest: str) -> str:
    return f"random-init, seed {seed}" if random_weights else f"sha256:{digest}"


def _model_entry(name: str, sclip: SclipModel, request: ExportRequest) -> dict:
    return {
        "name": name,
        "arch": sclip.arch.describe(),
        "weights_id": sclip.weights_id,
        "weights": _weights_text(sclip.random_weights, request.seed, sclip.weights_id),
        "seed": request.seed if sclip.random_weights else None,
    }


def _sam_entry(sam: Sam2Model, request: ExportRequest) -> dict:
    return {
        "name": sam.name,
        "arch": sam.spec.arch,
        "weights_id": sam.weights_id,
        "weights": _weights_text(sam.random_weights, request.seed, sam.weights_id),
        "seed": request.seed if sam.random_weights else None,
    }


def _versions() -> dict:
    return {"python": platform.python_version(), "clipsam": __version__, **package_versions(_VERSIONED)}
