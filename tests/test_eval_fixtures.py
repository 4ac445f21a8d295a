"""Miniature benchmarks in exactly the MMSegmentation on-disk layouts (helpers for the test_eval_* files).

Each dataset gets two or three tiny images whose raw label PNGs are known, including ignore (255) pixels and,
for the reduce_zero_label datasets, zeros that must become ignored.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from clipsam.engine.eval.datasets import SPECS

# Raw label maps (as stored on disk) per dataset: values in the raw id space of that dataset.
RAW_LABELS: dict[str, list[np.ndarray]] = {
    "voc21": [
        np.array([[0, 0, 15, 15], [0, 255, 15, 15], [20, 20, 0, 0]], np.uint8),
        np.array([[1, 1, 1, 0, 0], [1, 1, 255, 0, 0], [7, 7, 7, 7, 0], [7, 7, 7, 7, 255]], np.uint8),
    ],
    "context60": [
        np.array([[0, 59, 59, 3], [0, 59, 255, 3], [12, 12, 12, 3]], np.uint8),
        np.array([[5, 5, 0, 0], [5, 5, 0, 0], [1, 1, 1, 1]], np.uint8),
    ],
    "coco-object": [
        np.array([[0, 0, 80, 80], [1, 1, 80, 255], [1, 1, 0, 0]], np.uint8),
        np.array([[2, 2, 2], [0, 0, 255], [40, 40, 40]], np.uint8),
    ],
    "coco-stuff164k": [
        np.array([[0, 170, 170, 90], [0, 255, 170, 90], [79, 79, 80, 90]], np.uint8),
        np.array([[3, 3, 3], [3, 100, 100], [255, 100, 100]], np.uint8),
        np.array([[150, 150], [150, 0]], np.uint8),
    ],
    "cityscapes": [
        np.array([[0, 0, 1, 1, 10], [0, 0, 1, 255, 10], [13, 13, 18, 18, 10]], np.uint8),
        np.array([[2, 2, 2, 255], [8, 8, 8, 8], [0, 0, 0, 0]], np.uint8),
    ],
    "ade20k": [
        np.array([[0, 1, 1, 150], [0, 1, 255, 150], [3, 3, 3, 150]], np.uint8),
        np.array([[12, 12, 0], [12, 12, 0], [77, 77, 77]], np.uint8),
    ],
}
RAW_LABELS["voc20"] = RAW_LABELS["voc21"]
RAW_LABELS["context59"] = RAW_LABELS["context60"]
# Where the miniature's samples live under the image dir (Cityscapes: one folder per city).
SAMPLE_IDS: dict[str, list[str]] = {
    "voc21": ["2007_000033", "2007_000042"],
    "context60": ["2008_000002", "2008_000019"],
    "coco-object": ["000000000139", "000000000285"],
    "coco-stuff164k": ["000000000139", "000000000285", "000000000632"],
    "cityscapes": ["frankfurt/frankfurt_000000_000294", "lindau/lindau_000000_000019"],
    "ade20k": ["ADE_val_00000001", "ADE_val_00000002"],
}
SAMPLE_IDS["voc20"] = SAMPLE_IDS["voc21"]
SAMPLE_IDS["context59"] = SAMPLE_IDS["context60"]


def expected_labels(name: str) -> list[np.ndarray]:
    """The labels the reader must return: raw, or with mmseg's reduce_zero_label applied by hand."""
    out = []
    for raw in RAW_LABELS[name]:
        if not SPECS[name].reduce_zero_label:
            out.append(raw.copy())
            continue
        reduced = raw.astype(np.int64) - 1
        reduced[raw == 0] = 255
        reduced[raw == 255] = 255
        out.append(reduced.astype(np.uint8))
    return out


def write_label(path: Path, raw: np.ndarray, palette: bool) -> None:
    """Save uint8 [H, W] class ids as a grey PNG, or as a palette PNG whose indices are the ids (VOC)."""
    height, width = raw.shape
    if palette:
        picture = Image.frombytes("P", (width, height), raw.tobytes())
        picture.putpalette(np.random.default_rng(1).integers(0, 256, 768).tolist())
    else:
        picture = Image.frombytes("L", (width, height), raw.tobytes())
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path)


def make_benchmark(name: str, data_dir: Path, seed: int = 0) -> Path:
    """Write the miniature `name` under data_dir in its MMSeg layout; returns the dataset root."""
    spec = SPECS[name]
    root = data_dir / spec.folder
    rng = np.random.default_rng(seed)
    for sample_id, raw in zip(SAMPLE_IDS[name], RAW_LABELS[name], strict=True):
        image_path = root / spec.image_dir / f"{sample_id}{spec.image_suffix}"
        image_path.parent.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (*raw.shape, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(image_path)
        label_path = root / spec.label_dir / f"{sample_id}{spec.label_suffix}"
        write_label(label_path, raw, palette=name in ("voc21", "voc20"))
    if spec.split_file:
        split = root / spec.split_file
        split.parent.mkdir(parents=True, exist_ok=True)
        split.write_text("\n".join(SAMPLE_IDS[name]) + "\n")
    return root
