"""Writing results: COCO-style JSON and pictures, atomically, and together as one transaction."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from clipsam.engine.output_files import atomic_output, output_transaction
from clipsam.engine.types import SegmentationResult


def result_to_json(result: SegmentationResult, image_file: str) -> dict:
    """The COCO-style record of one image's segments (docs/segment-output.schema.json)."""
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
        "counts": {k: int(v) for k, v in result.counts.items()},
    }


def write_json(path: Path | str, record: dict) -> None:
    with atomic_output(path, "w") as stream:
        dump_json(record, stream)


def write_picture(path: Path | str, picture: np.ndarray) -> None:
    """Save uint8 [H, W, 3] as PNG or JPEG (by suffix), atomically."""
    with atomic_output(path, "wb") as stream:
        save_picture(picture, stream, path)


def write_results(
    picture_path: Path, picture: np.ndarray, json_path: Path | None, record: dict | None
) -> None:
    """The picture and (when json_path is given) the JSON record as one transaction: both appear, or neither
    (a failure on either, a full disk included, leaves no output and no temp file)."""
    with output_transaction() as outputs:
        with outputs.open(picture_path, "wb") as stream:
            save_picture(picture, stream, picture_path)
        if json_path is not None:
            with outputs.open(json_path, "w") as stream:
                dump_json(record, stream)


def dump_json(record: dict, stream) -> None:
    json.dump(record, stream, indent=1)
    stream.write("\n")


def save_picture(picture: np.ndarray, stream, path: Path | str) -> None:
    """uint8 [H, W, 3] into `stream` as JPEG for a .jpg / .jpeg `path`, PNG otherwise."""
    kind = "JPEG" if Path(path).suffix.lower() in (".jpg", ".jpeg") else "PNG"
    Image.fromarray(picture).save(stream, format=kind)
