"""`clipsam export`: the ONNX graphs of SCLIP and / or SAM2, text features and the manifest, in one folder.

Order matters for atomicity: every checkpoint is loaded and checked first (a bad one leaves the folder as it
was), then the old manifest is removed, each graph is written to a temp file and
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
from clipsam.engine.bench.demo_scene import DEMO_VOCABULARY
from clipsam.engine.manifest import (
    MANIFEST_NAME,
    REGIONS_GRAPH,
    TEXT_GRAPH,
    file_digest,
    package_versions,
    write_manifest,
)
from clipsam.engine.text.bank import TextBank
from clipsam.engine.transforms import CLIP_MEAN_255, CLIP_STD_255, SAM2_IMAGE_SIZE, SAM2_MEAN, SAM2_STD
from clipsam.engine.vocabulary import BACKGROUND_SYNONYMS
from clipsam.export.clip_model import SclipModel, load_sclip
from clipsam.export.onnx_sam2_decoder import export_sam2_decoder
from clipsam.export.onnx_sam2_encoder import export_sam2_encoder
from clipsam.export.onnx_sclip import export_sclip_tower
from clipsam.export.onnx_sclip_regions import export_sclip_region_tower
from clipsam.export.onnx_text import copy_vocabulary_file, export_text_encoder
from clipsam.export.onnx_utils import OPSET, io_specs, pin_output_dims_by_running
from clipsam.export.registry import DEFAULT_CLIP
from clipsam.export.sam2_fast_decoder import FAST_GRAPH, IMAGE_GRAPH, export_sam2_fast_decoder
from clipsam.export.sam2_model import Sam2Model, build_sam2_model

TEXT_DIR = "text"
DEFAULT_QUERIES = (*DEMO_VOCABULARY, *BACKGROUND_SYNONYMS)
_VERSIONED = ("torch", "onnx", "onnxruntime", "open_clip_torch", "sam2", "numpy", "numba")


EXPORTABLE = ("sclip", "sam2")  # the manifest's model keys; `clipsam export --only` picks one


@dataclass(frozen=True)
class ExportRequest:
    """What to export: which models, their weights (checkpoints or seeded random init), the words to embed.

    models: a subset of EXPORTABLE; "sclip" brings the SCLIP tower and the text features, "sam2" the SAM2
    encoder and decoders. A model not exported needs no weights at all.
    """

    out_dir: Path
    sam_model: str = "sam2.1-hiera-tiny"
    clip_checkpoint: Path | None = None
    sam_checkpoint: Path | None = None
    clip_random: bool = False
    sam_random: bool = False
    seed: int = 0
    queries: tuple[str, ...] = ()
    int8: bool = False  # also write the int8 encoder copies (the fast precision: export/quantize*.py)
    models: tuple[str, ...] = EXPORTABLE


def export_artifacts(request: ExportRequest, log=print) -> dict:
    """Export the requested models' graphs, the text features (with SCLIP) and, last, the manifest.

    Returns the manifest record. Its top-level "random_weights" is derived: true when any exported model has
    random weights; each entry of "models" says it for its own model.
    """
    unknown = set(request.models) - set(EXPORTABLE)
    assert request.models and not unknown, f"models must be a non-empty subset of {EXPORTABLE}"
    out = Path(request.out_dir)
    # Every checkpoint is read and checked before the folder is touched: a bad one leaves the old export.
    sclip = sam = None
    start = time.perf_counter()
    if "sclip" in request.models:
        sclip = load_sclip(request.clip_checkpoint, random_weights=request.clip_random, seed=request.seed)
    if "sam2" in request.models:
        sam = build_sam2_model(
            request.sam_model, request.sam_checkpoint, random_weights=request.sam_random, seed=request.seed
        )
    log(f"loaded the weights in {time.perf_counter() - start:.1f} s")
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST_NAME).unlink(missing_ok=True)
    graphs, models, extra = {}, {}, {}
    if sclip is not None:
        graphs.update(_export_sclip(sclip, out, log))
        graphs.update(_export_text_encoder(sclip, out, log))
        embed_text(sclip, out / TEXT_DIR, (*DEFAULT_QUERIES, *request.queries))
        models["sclip"] = _model_entry(DEFAULT_CLIP, sclip.arch.describe(), sclip, request.seed)
        extra["text_features"] = {"dir": TEXT_DIR, "templates": "openai-imagenet-80"}
    if sam is not None:
        graphs.update(_export_sam2(sam, out, log))
        models["sam2"] = _model_entry(sam.name, sam.spec.arch, sam, request.seed)
    record = {
        "clipsam_version": __version__,
        "created_unix": int(time.time()),
        "random_weights": any(entry["random_weights"] for entry in models.values()),
        "models": models,
        "graphs": graphs,
        **extra,
        "versions": _versions(),
    }
    write_manifest(out, record)
    if request.int8:
        from clipsam.export.quantize import add_int8_graphs

        record["graphs"].update(add_int8_graphs(out, log))
    return record


def _export_sclip(sclip: SclipModel, out: Path, log) -> dict:
    """The SCLIP tower graph's manifest entry (with its patch size and preprocessing)."""
    entry = _timed_export("sclip_tower", lambda path: export_sclip_tower(sclip, path), out, log)
    entry.update(patch_size=sclip.patch_size, preprocessing=_clip_preprocessing(sclip))
    regions = _timed_export(REGIONS_GRAPH, lambda path: export_sclip_region_tower(sclip, path), out, log)
    regions.update(patch_size=sclip.patch_size, preprocessing=_clip_preprocessing(sclip))
    return {"sclip_tower": entry, REGIONS_GRAPH: regions}


def _export_text_encoder(sclip: SclipModel, out: Path, log) -> dict:
    """CLIP's text tower graph and, in the text folder, the BPE vocabulary its tokenizer reads."""
    entry = _timed_export(TEXT_GRAPH, lambda path: export_text_encoder(sclip, path), out, log)
    vocabulary = copy_vocabulary_file(out / TEXT_DIR)
    entry["context_length"] = int(sclip.clip.context_length)
    entry["vocabulary_file"] = {
        "file": vocabulary.relative_to(out).as_posix(),
        "bytes": vocabulary.stat().st_size,
        "sha256": file_digest(vocabulary),
    }
    return {TEXT_GRAPH: entry}


def _export_sam2(sam: Sam2Model, out: Path, log) -> dict:
    """The SAM2 encoder, the faithful decoder and the rewritten decoder's two graphs."""
    graphs = {
        "sam2_encoder": _timed_export("sam2_encoder", lambda path: export_sam2_encoder(sam, path), out, log),
        "sam2_decoder": _timed_export("sam2_decoder", lambda path: export_sam2_decoder(sam, path), out, log),
    }
    graphs["sam2_encoder"]["preprocessing"] = _sam2_preprocessing()
    graphs.update(_export_fast_decoder(sam, out, log))
    return graphs


def _timed_export(name: str, export, out: Path, log) -> dict:
    start = time.perf_counter()
    report = export(out / f"{name}.onnx")
    entry = _graph_entry(out / f"{name}.onnx", report, time.perf_counter() - start)
    log(f"exported {name}.onnx in {entry['export_seconds']:.1f} s")
    return entry


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


def _model_entry(name: str, arch: str, model: SclipModel | Sam2Model, seed: int) -> dict:
    """One model's provenance: weights sha256 or "random-init, seed N", and its own random_weights flag."""
    random = bool(model.random_weights)
    return {
        "name": name,
        "arch": arch,
        "weights_id": model.weights_id,
        "weights": f"random-init, seed {seed}" if random else f"sha256:{model.weights_id}",
        "random_weights": random,
        "seed": seed if random else None,
    }


def _versions() -> dict:
    return {"python": platform.python_version(), "clipsam": __version__, **package_versions(_VERSIONED)}
