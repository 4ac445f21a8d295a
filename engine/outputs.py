"""Writing results: COCO-style JSON and pictures, each written atomically."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from clipsam.engine.image_io import atomic_output
from clipsam.engine.types import SegmentationResult


def result_to_json(result: SegmentationResult, image_file: str) -> dict:
    """The COCO-style record of one image's segments (schema in README.md → Outputs)."""
    return {
        "image": {"file": image_file, "height": result.height, "width": result.width},
        "models": result.models,
        "random_weights": result.random_weights,
        "class_names": list(result.class_names),
        "segments": [
            {
                "class_id": seg.class_id,
                "class_name": seg.class_name,
                "score": round(float(seg.score), 6),
                "bbox": [float(v) for v in seg.bbox_xywh],
                "area": int(seg.area),
                "segmentation": {"size": list(seg.rle["size"]), "counts": seg.rle["counts"]},
            }
            for seg in result.segments
        ],
        "timings_ms": {k: round(float(v), 3) for k, v in result.timings_ms.items()},
    }


def write_json(path: Path | str, record: dict) -> None:
    with atomic_output(path, "w") as stream:
        json.dump(record, stream, indent=1)
        stream.write("\n")


def write_picture(path: Path | str, picture: np.ndarray) -> None:
    """Save uint8 [H, W, 3] as PNG or JPEG (by suffix), atomically."""
    path = Path(path)
    kind = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    with atomic_output(path, "wb") as stream:
        Image.fromarray(picture).save(stream, format=kind)
