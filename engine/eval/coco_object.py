"""COCO-Object labels (background 0 + the 80 COCO thing classes 1..80) from COCO annotations.

Two sources, both written as `<root>/annotations/<split>/<image id>_instanceTrainIds.png` beside the
COCO-Stuff164k labels, where the coco-object reader looks for them:
- COCO-Stuff164k train ids (`*_labelTrainIds.png` from mmseg's coco_stuff164k converter: things 0..79,
  stuff 80..170, 255 unlabelled): thing t → t + 1, stuff → 0, unlabelled stays 255 (ignored). This is the
  source of the published COCO-Object numbers.
- COCO panoptic (`panoptic_<split>.json` + its PNG folder, segment id = R + 256·G + 256²·B): a thing segment →
  its category's rank among the 80 thing categories (by id) + 1, a stuff segment → 0, unannotated pixels
  (id 0 / no segment) → 255.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from clipsam.engine.errors import ClipsamError
from clipsam.engine.eval.metrics import IGNORE_INDEX
from clipsam.engine.image_io import atomic_output

NUM_THINGS = 80
STUFF_SUFFIX = "_labelTrainIds.png"
OBJECT_SUFFIX = "_instanceTrainIds.png"


def stuff_to_object(train_ids: np.ndarray) -> np.ndarray:
    """uint8 [H, W] COCO-Stuff164k train ids → uint8 [H, W] COCO-Object ids (module doc)."""
    ids = np.asarray(train_ids)
    out = np.zeros(ids.shape, np.uint8)
    things = ids < NUM_THINGS
    out[things] = ids[things].astype(np.uint8) + 1
    out[ids == IGNORE_INDEX] = IGNORE_INDEX
    return out


def panoptic_to_object(
    panoptic_rgb: np.ndarray, segments_info: list[dict], thing_rank: dict[int, int]
) -> np.ndarray:
    """uint8 [H, W] COCO-Object ids from a panoptic PNG uint8 [H, W, 3] and its segments_info.

    thing_rank: COCO category id → 1..80 for the thing categories; other categories are stuff (→ 0).
    """
    rgb = np.asarray(panoptic_rgb).astype(np.int64)
    segment_ids = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
    out = np.full(segment_ids.shape, IGNORE_INDEX, np.uint8)
    for segment in segments_info:
        out[segment_ids == segment["id"]] = thing_rank.get(int(segment["category_id"]), 0)
    return out


def convert_coco_object(
    root: Path | str,
    *,
    split: str = "val2017",
    panoptic_json: Path | str | None = None,
    panoptic_dir: Path | str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Write every `*_instanceTrainIds.png` of `split` under the COCO-Stuff164k root; returns the count.

    Without panoptic_json the source is root/annotations/<split>/*_labelTrainIds.png; with it, the panoptic
    PNGs in panoptic_dir (default: beside the JSON, named like it without .json).
    """
    out_dir = Path(root) / "annotations" / split
    if panoptic_json is None:
        jobs = _stuff_jobs(out_dir)
    else:
        jobs = _panoptic_jobs(Path(panoptic_json), panoptic_dir, out_dir)
    for done, (target, make_label) in enumerate(jobs, start=1):
        with atomic_output(target) as stream:
            Image.fromarray(make_label()).save(stream, format="PNG")
        if progress is not None:
            progress(done, len(jobs))
    return len(jobs)


def _stuff_jobs(out_dir: Path) -> list:
    sources = sorted(out_dir.glob(f"*{STUFF_SUFFIX}")) if out_dir.is_dir() else []
    if not sources:
        raise ClipsamError(
            f"no COCO-Stuff164k train-id labels '{out_dir}/*{STUFF_SUFFIX}': prepare coco_stuff164k with "
            "mmseg's tools/dataset_converters/coco_stuff164k.py first, or pass --panoptic-json"
        )

    def job(source: Path):
        def make() -> np.ndarray:
            with Image.open(source) as picture:
                return stuff_to_object(np.asarray(picture))

        return out_dir / (source.name[: -len(STUFF_SUFFIX)] + OBJECT_SUFFIX), make

    return [job(source) for source in sources]


def _panoptic_jobs(json_path: Path, png_dir: Path | str | None, out_dir: Path) -> list:
    png_dir = Path(png_dir) if png_dir is not None else json_path.with_suffix("")
    try:
        record = json.loads(json_path.read_text(encoding="utf-8"))
        things = sorted(int(c["id"]) for c in record["categories"] if c.get("isthing"))
        annotations = record["annotations"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ClipsamError(f"'{json_path}' is not a COCO panoptic annotation file ({err})") from None
    if len(things) != NUM_THINGS:
        raise ClipsamError(f"'{json_path}' lists {len(things)} thing categories, COCO has {NUM_THINGS}")
    if not png_dir.is_dir():
        raise ClipsamError(f"panoptic PNG folder '{png_dir}' does not exist: pass --panoptic-dir")
    thing_rank = {category: rank + 1 for rank, category in enumerate(things)}
    out_dir.mkdir(parents=True, exist_ok=True)

    def job(annotation: dict):
        source = png_dir / annotation["file_name"]

        def make() -> np.ndarray:
            if not source.is_file():
                raise ClipsamError(f"panoptic PNG '{source}' listed in '{json_path}' does not exist")
            with Image.open(source) as picture:
                return panoptic_to_object(
                    np.asarray(picture.convert("RGB")), annotation["segments_info"], thing_rank
                )

        return out_dir / (Path(annotation["file_name"]).stem + OBJECT_SUFFIX), make

    return [job(annotation) for annotation in annotations]
