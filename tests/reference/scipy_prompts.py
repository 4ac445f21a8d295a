"""Slow reference for engine/prompts.py: the same prompt extraction with scipy.ndimage.label per class.

Kept verbatim from the first (scipy-based) implementation; tests/test_prompts_reference.py checks that the
numba-kernel version gives identical prompts.


Definitions (the CLI's flags mean exactly these):
- region: a connected component of the pixels of one class in `DenseMap.pred`, 8-connectivity.
- confidence (`--min-confidence`): the mean, over the region's pixels, of the probability of the region's own
  class, `probs[class, y, x]` (summed in float64). For a foreground class this is the region's mean top-class
  probability.
- area (`--min-region-size`): the region's pixel count in the original image.
- order: confidence descending, then area descending, then the raster (row-major) position of the region's
  first pixel; `--max-prompts` keeps the first ones.
- point: the region's centroid rounded half-up to the pixel grid when that pixel belongs to the region, else
  the region's most probable pixel (the first in raster order on ties), so the point always lies inside its
  region (a plain centroid can fall outside a ring or a C-shape). Coordinates are the pixel's integer column
  and row (x, y), as the seed passes them to SAM2ImagePredictor; in SAM's continuous frame that is the pixel's
  top-left corner, half a pixel from its centre.
- box: (x0, y0, x1, y1) with x1 = max x + 1 and y1 = max y + 1.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from clipsam.engine.errors import ClipsamError
from clipsam.engine.types import DenseMap, Prompts

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class RegionStats:
    """Statistics of the R labelled regions (in no particular order); image frame.

    region_map: int32 [H, W], each pixel's region index 0..R-1, or -1 where its class was not labelled.
    class_ids: int32 [R]. areas: int64 [R], pixels.
    centroids: float64 [R, 2], (x, y) mean pixel index.
    boxes: int64 [R, 4], (x0, y0, x1, y1) with x1 = max x + 1, y1 = max y + 1.
    confidences: float64 [R], mean probability of the region's class over its pixels.
    first_pixels: int64 [R], raster index (y * W + x) of the region's first pixel.
    peak_pixels: int64 [R], raster index of the region's most probable pixel (first in raster order on ties).
    """

    region_map: np.ndarray
    class_ids: np.ndarray
    areas: np.ndarray
    centroids: np.ndarray
    boxes: np.ndarray
    confidences: np.ndarray
    first_pixels: np.ndarray
    peak_pixels: np.ndarray


def extract_prompts(
    dense: DenseMap,
    *,
    min_confidence: float = 0.7,
    min_region_size: int = 100,
    max_prompts: int | None = None,
    skip_classes: Iterable[int] = (),
) -> Prompts:
    """One positive point per kept region of the dense map, most confident first (definitions: module doc).

    dense.pred int [H, W] and dense.probs float32 [C, H, W] in the image frame. skip_classes: class indices
    that never become prompts (e.g. 0 for background). Returns Prompts with coords float32 [B, 1, 2] (x, y)
    image frame, scores = region confidence (float32), boxes float32 [B, 4], areas int64 [B]; B = 0 when
    nothing passes.
    """
    _check_arguments(min_confidence, min_region_size, max_prompts)
    num_classes, height, width = dense.probs.shape
    assert dense.pred.shape == (height, width), "pred and probs disagree on the image size"
    skipped = set(int(c) for c in skip_classes)
    classes = [c for c in range(num_classes) if c not in skipped]
    pred = dense.pred.astype(np.intp, copy=False)
    class_prob = np.take_along_axis(dense.probs, pred[None], axis=0)[0]  # float32 [H, W]
    region_map, region_class = _label_regions(pred, classes)
    stats = _region_stats(region_map, region_class, class_prob)
    kept = _select_regions(stats, min_confidence, min_region_size, max_prompts)
    if kept.size == 0:
        return Prompts.empty()
    return Prompts(
        coords=_prompt_points(stats, kept)[:, None, :].astype(np.float32),
        labels=np.ones((kept.size, 1), np.int32),
        class_ids=stats.class_ids[kept].astype(np.int32),
        scores=stats.confidences[kept].astype(np.float32),
        boxes=stats.boxes[kept].astype(np.float32),
        areas=stats.areas[kept].astype(np.int64),
    )


def _check_arguments(min_confidence: float, min_region_size: int, max_prompts: int | None) -> None:
    if not 0.0 <= min_confidence <= 1.0:
        raise ClipsamError(f"--min-confidence must be between 0 and 1, got {min_confidence}")
    if min_region_size < 0:
        raise ClipsamError(f"--min-region-size must be 0 or more pixels, got {min_region_size}")
    if max_prompts is not None and max_prompts < 0:
        raise ClipsamError(f"--max-prompts must be 0 or more, got {max_prompts}")


def _label_regions(pred: np.ndarray, classes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Connected components (8-connectivity) of each listed class in pred int [H, W].

    The only labeling code of the stage (a numba kernel replaces it). Returns region_map int32 [H, W] (region
    index, -1 for pixels of unlisted classes) and region_class int32 [R]. Region indices are numbered class
    by class; nothing downstream depends on that order.
    """
    region_map = np.full(pred.shape, -1, dtype=np.int32)
    region_class: list[np.ndarray] = []
    count = 0
    for class_id in np.intersect1d(np.unique(pred), classes):
        labels, found = ndimage.label(pred == class_id, structure=_EIGHT_CONNECTED)
        inside = labels > 0
        region_map[inside] = labels[inside] - 1 + count
        region_class.append(np.full(found, class_id, dtype=np.int32))
        count += found
    classes_of_regions = np.concatenate(region_class) if region_class else np.zeros(0, np.int32)
    return region_map, classes_of_regions


def _region_stats(region_map: np.ndarray, region_class: np.ndarray, class_prob: np.ndarray) -> RegionStats:
    """Area, centroid, box, confidence, first and peak pixel of each region (class_prob float32 [H, W])."""
    width = region_map.shape[1]
    count = region_class.size
    flat = region_map.ravel()
    pixels = np.flatnonzero(flat >= 0)  # raster indices of labelled pixels, ascending
    ids = flat[pixels]
    xs, ys = pixels % width, pixels // width
    probs = class_prob.ravel()[pixels].astype(np.float64)

    areas = np.bincount(ids, minlength=count).astype(np.int64)
    centroids = np.stack(
        [np.bincount(ids, xs, minlength=count) / areas, np.bincount(ids, ys, minlength=count) / areas], axis=1
    )
    confidences = np.bincount(ids, probs, minlength=count) / areas
    return RegionStats(
        region_map=region_map,
        class_ids=region_class,
        areas=areas,
        centroids=centroids,
        boxes=_boxes(ids, xs, ys, count),
        confidences=confidences,
        first_pixels=_first_pixels(ids, pixels, count),
        peak_pixels=_peak_pixels(ids, pixels, probs, count),
    )


def _boxes(ids: np.ndarray, xs: np.ndarray, ys: np.ndarray, count: int) -> np.ndarray:
    """int64 [R, 4] (x0, y0, x1, y1), x1 and y1 one past the last pixel."""
    low = np.full((count, 2), np.iinfo(np.int64).max, dtype=np.int64)
    high = np.full((count, 2), -1, dtype=np.int64)
    for axis, coord in enumerate((xs, ys)):
        np.minimum.at(low[:, axis], ids, coord)
        np.maximum.at(high[:, axis], ids, coord)
    return np.concatenate([low, high + 1], axis=1)


def _first_pixels(ids: np.ndarray, pixels: np.ndarray, count: int) -> np.ndarray:
    first = np.full(count, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first, ids, pixels)
    return first


def _peak_pixels(ids: np.ndarray, pixels: np.ndarray, probs: np.ndarray, count: int) -> np.ndarray:
    """Raster index of each region's most probable pixel; ties go to the first in raster order."""
    peak_prob = np.full(count, -np.inf)
    np.maximum.at(peak_prob, ids, probs)
    at_peak = probs == peak_prob[ids]
    return _first_pixels(ids[at_peak], pixels[at_peak], count)


def _select_regions(
    stats: RegionStats, min_confidence: float, min_region_size: int, max_prompts: int | None
) -> np.ndarray:
    """Indices of the kept regions, int64 [B], in prompt order (confidence, area, raster position)."""
    passes = (stats.confidences >= min_confidence) & (stats.areas >= min_region_size)
    candidates = np.flatnonzero(passes)
    # lexsort's last key is the primary one.
    order = np.lexsort(
        (stats.first_pixels[candidates], -stats.areas[candidates], -stats.confidences[candidates])
    )
    return candidates[order][:max_prompts]


def _prompt_points(stats: RegionStats, kept: np.ndarray) -> np.ndarray:
    """int64 [B, 2] (x, y): the rounded centroid when it lies in the region, else the peak pixel."""
    width = stats.region_map.shape[1]
    centre = np.floor(stats.centroids[kept] + 0.5).astype(np.int64)  # half-up rounding
    inside = stats.region_map[centre[:, 1], centre[:, 0]] == kept
    peak = stats.peak_pixels[kept]
    peak_xy = np.stack([peak % width, peak // width], axis=1)
    return np.where(inside[:, None], centre, peak_xy)
