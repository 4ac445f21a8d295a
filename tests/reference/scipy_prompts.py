"""Slow reference for engine/prompts.py `extract_prompts`, written from the definition alone.

Definition (engine/prompts.py module doc; README "--min-confidence" / "Each region gives one positive point"):
- region: a connected component of the pixels of one class in `DenseMap.pred`, 8-connectivity; classes in
  `skip_classes` have no regions.
- confidence: the mean, over the region's pixels, of `probs[class, y, x]`, summed in float64.
- area: the region's pixel count.
- kept: confidence >= min_confidence and area >= min_region_size.
- order: confidence descending, then area descending, then the raster (row-major) position of the region's
  first pixel; `max_prompts` keeps the first ones (None keeps all).
- point: the region's centroid rounded half-up to the pixel grid when that pixel belongs to the region, else
  the region's most probable pixel (the first in raster order on ties); (x, y) = (column, row).
- box: (x0, y0, x1, y1) with x1 = max x + 1 and y1 = max y + 1.

Deliberately plain: one region at a time, Python loops over its pixels, exact integer arithmetic for the
rounded centroid. Shares no code with engine/prompts.py (labelling there is a numba kernel).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from clipsam.engine.types import DenseMap, Prompts

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class Region:
    """One connected region of one class; pixels are (x, y) pairs in raster order, image frame."""

    class_id: int
    pixels: list[tuple[int, int]]
    confidence: float
    point: tuple[int, int]
    box: tuple[int, int, int, int]

    @property
    def area(self) -> int:
        return len(self.pixels)

    @property
    def first_pixel(self) -> tuple[int, int]:
        """(row, column) of the first pixel in raster order: sorts as the raster position."""
        x, y = self.pixels[0]
        return (y, x)


def extract_prompts(
    dense: DenseMap,
    *,
    min_confidence: float = 0.7,
    min_region_size: int = 100,
    max_prompts: int | None = None,
    skip_classes: Iterable[int] = (),
) -> Prompts:
    """Prompts of the kept regions, in prompt order (definitions: module doc).

    dense.probs float32 [C, H, W], dense.pred int [H, W], image frame. Returns Prompts with coords float32
    [B, 1, 2] (x, y), labels int32 [B, 1] (all 1), class_ids int32 [B], scores float32 [B] (confidence),
    boxes float32 [B, 4], areas int64 [B].
    """
    skipped = {int(c) for c in skip_classes}
    regions = [
        region
        for class_id in range(dense.probs.shape[0])
        if class_id not in skipped
        for region in regions_of_class(dense, class_id)
    ]
    kept = [r for r in regions if r.confidence >= min_confidence and r.area >= min_region_size]
    kept.sort(key=lambda r: (-r.confidence, -r.area, r.first_pixel))
    if max_prompts is not None:
        kept = kept[:max_prompts]
    if not kept:
        return Prompts.empty()
    return Prompts(
        coords=np.array([[r.point] for r in kept], dtype=np.float32),
        labels=np.ones((len(kept), 1), dtype=np.int32),
        class_ids=np.array([r.class_id for r in kept], dtype=np.int32),
        scores=np.array([r.confidence for r in kept], dtype=np.float32),
        boxes=np.array([r.box for r in kept], dtype=np.float32),
        areas=np.array([r.area for r in kept], dtype=np.int64),
    )


def regions_of_class(dense: DenseMap, class_id: int) -> list[Region]:
    """Every 8-connected region of `class_id` in dense.pred, with its statistics."""
    labels, count = ndimage.label(dense.pred == class_id, structure=_EIGHT_CONNECTED)
    class_probs = dense.probs[class_id]
    regions = []
    for label in range(1, count + 1):
        rows, cols = np.nonzero(labels == label)  # row-major, so raster order
        pixels = [(int(x), int(y)) for y, x in zip(rows, cols, strict=True)]
        regions.append(
            Region(
                class_id=class_id,
                pixels=pixels,
                confidence=_mean_probability(class_probs, pixels),
                point=_prompt_point(labels == label, class_probs, pixels),
                box=_box(pixels),
            )
        )
    return regions


def _mean_probability(class_probs: np.ndarray, pixels: list[tuple[int, int]]) -> float:
    total = 0.0  # Python float: float64
    for x, y in pixels:
        total += float(class_probs[y, x])
    return total / len(pixels)


def _prompt_point(
    in_region: np.ndarray, class_probs: np.ndarray, pixels: list[tuple[int, int]]
) -> tuple[int, int]:
    """The rounded centroid if it lies in the region (in_region bool [H, W]), else the most probable pixel."""
    area = len(pixels)
    sum_x = sum(x for x, _ in pixels)
    sum_y = sum(y for _, y in pixels)
    # floor(s / n + 1/2) = floor((2 s + n) / (2 n)): half-up rounding of the mean, exact in integers.
    centre = ((2 * sum_x + area) // (2 * area), (2 * sum_y + area) // (2 * area))
    if in_region[centre[1], centre[0]]:
        return centre
    best = pixels[0]
    for x, y in pixels[1:]:
        if class_probs[y, x] > class_probs[best[1], best[0]]:  # strictly greater: ties keep the earlier pixel
            best = (x, y)
    return best


def _box(pixels: list[tuple[int, int]]) -> tuple[int, int, int, int]:
    xs = [x for x, _ in pixels]
    ys = [y for _, y in pixels]
    return (min(xs), min(ys), max(xs) + 1, max(ys) + 1)
