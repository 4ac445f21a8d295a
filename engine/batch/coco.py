"""The run's COCO instances file from its per-image JSON records (docs/segment-output.schema.json).

Image ids are the images' 1-based positions in the batch's sorted order (so a resumed run and an
uninterrupted one give the same file), category ids are class ids + 1 (COCO's ids start at 1), annotation
ids count from 1 in image order then segment order. Each annotation keeps the segment's COCO RLE, bbox
[x, y, w, h], area and score, with iscrowd 0: `pycocotools.coco.COCO` loads the file and `COCO.loadRes`
takes its annotations as results.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

INFO = {"description": "clipsam segment --images", "version": "1.0"}


def coco_instances(records: Iterable[tuple[int, str, dict]], class_names: Sequence[str]) -> dict:
    """records: (image id, file name, the image's JSON record) in image-id order."""
    images, annotations = [], []
    for image_id, file_name, record in records:
        size = record["image"]
        images.append(
            {"id": image_id, "file_name": file_name, "height": size["height"], "width": size["width"]}
        )
        for segment in record["segments"]:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": segment["class_id"] + 1,
                    "segmentation": dict(segment["segmentation"]),
                    "area": segment["area"],
                    "bbox": list(segment["bbox"]),
                    "score": segment["score"],
                    "iscrowd": 0,
                }
            )
    categories = [{"id": index + 1, "name": name} for index, name in enumerate(class_names)]
    return {"info": INFO, "images": images, "annotations": annotations, "categories": categories}
