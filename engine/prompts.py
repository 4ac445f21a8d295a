"""Prompts for SAM2: one point (and box) per confident connected region of a class of the dense map; the
user's own points and boxes; a regular grid.

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

Prompts a user gives directly (points and boxes), for SAM2 without SCLIP. Torch-free.

Each point and each box is one prompt and gives one segment. Prompt i (points first, in the order given, then
boxes) gets class id i and the class name "prompt i" (PROMPT_CLASS_PREFIX), so the JSON, the overlay legend
and the colours tell the prompts apart.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from clipsam.engine.errors import ClipsamError
from clipsam.engine.types import DenseMap, Prompts
from clipsam.kernels.components import connected_components


@dataclass(frozen=True)
class RegionStats:
    """Statistics of the R labelled regions (in no particular order); image frame.

    region_map: int32 [H, W], each pixel's region index 0..R-1 (regions numbered in raster order of their
        first pixel).
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
    _, height, width = dense.probs.shape
    assert dense.pred.shape == (height, width), "pred and probs disagree on the image size"
    skipped = np.array(sorted({int(c) for c in skip_classes}), dtype=np.int32)
    pred = dense.pred.astype(np.intp, copy=False)
    class_prob = np.take_along_axis(dense.probs, pred[None], axis=0)[0]  # float32 [H, W]
    stats = _region_stats(pred.astype(np.int32, copy=False), class_prob)
    kept = _select_regions(stats, min_confidence, min_region_size, max_prompts, skipped)
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


def _region_stats(pred: np.ndarray, class_prob: np.ndarray) -> RegionStats:
    """Connected components (8-connectivity) of every class of pred int [H, W] with their statistics, in one
    pass of the numba labeling kernel; class_prob float32 [H, W] is each pixel's probability of its class."""
    found = connected_components(pred, connectivity=8, scores=class_prob, return_labels=True)
    width = pred.shape[1]
    first_pixels = np.arange(
        found.count, dtype=np.int64
    )  # labels are numbered in raster order of first pixel
    peak_xy = found.score_argmax.astype(np.int64)
    return RegionStats(
        region_map=found.labels - 1,
        class_ids=found.class_id,
        areas=found.area,
        centroids=found.centroid,
        boxes=found.bbox.astype(np.int64),
        confidences=found.score_sum / np.maximum(found.area, 1),
        first_pixels=first_pixels,
        peak_pixels=peak_xy[:, 1] * width + peak_xy[:, 0],
    )


def _select_regions(
    stats: RegionStats,
    min_confidence: float,
    min_region_size: int,
    max_prompts: int | None,
    skipped: np.ndarray,
) -> np.ndarray:
    """Indices of the kept regions, int64 [B], in prompt order (confidence, area, raster position)."""
    passes = (stats.confidences >= min_confidence) & (stats.areas >= min_region_size)
    passes &= ~np.isin(stats.class_ids, skipped)
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


PROMPT_CLASS_PREFIX = "prompt"


class PromptError(ClipsamError):
    """A point or box prompt is malformed or lies outside the image."""


def prompt_class_names(count: int) -> tuple[str, ...]:
    """("prompt 0", …, "prompt count-1"): the class names of a run with `count` user prompts."""
    return tuple(f"{PROMPT_CLASS_PREFIX} {index}" for index in range(count))


def user_prompt_groups(
    points_xy: np.ndarray, boxes_xyxy: np.ndarray, image_hw: tuple[int, int]
) -> list[tuple[Prompts, bool]]:
    """The user's prompts as SAM2 calls: [(Prompts, use_boxes)], one group for the points, one for the boxes.

    points_xy: float [N, 2] (x, y), image frame; boxes_xyxy: float [M, 4] (x0, y0, x1, y1), image frame.
    Points and boxes go to SAM2 in separate groups because a decoder call pads every prompt to the same
    number of points, and a padding point changes SAM2's mask; within a group every prompt has the same
    shape as a one-prompt SAM2ImagePredictor call. class_ids: points 0..N-1, boxes N..N+M-1; scores 1.
    Raises PromptError when there is no prompt, or one lies outside the image or is an inverted box.
    """
    points = np.asarray(points_xy, np.float32).reshape(-1, 2)
    boxes = np.asarray(boxes_xyxy, np.float32).reshape(-1, 4)
    _check_inside(points, boxes, image_hw)
    groups = []
    if len(points):
        ids = np.arange(len(points), dtype=np.int32)
        groups.append(
            (
                _prompts(points[:, None, :], np.ones((len(points), 1), np.int32), ids, _point_boxes(points)),
                False,
            )
        )
    if len(boxes):
        ids = np.arange(len(points), len(points) + len(boxes), dtype=np.int32)
        no_points = np.zeros((len(boxes), 0, 2), np.float32)
        groups.append((_prompts(no_points, np.zeros((len(boxes), 0), np.int32), ids, boxes), True))
    return groups


def _prompts(coords: np.ndarray, labels: np.ndarray, class_ids: np.ndarray, boxes: np.ndarray) -> Prompts:
    count = class_ids.shape[0]
    box_areas = np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0)
    return Prompts(
        coords=coords,
        labels=labels,
        class_ids=class_ids,
        scores=np.ones(count, np.float32),
        boxes=boxes,
        areas=box_areas.astype(np.int64),
    )


def _point_boxes(points: np.ndarray) -> np.ndarray:
    """float32 [N, 4]: a point's degenerate box (x, y, x, y); unused, since point prompts go without boxes."""
    return np.concatenate([points, points], axis=1).astype(np.float32)


def _check_inside(points: np.ndarray, boxes: np.ndarray, image_hw: tuple[int, int]) -> None:
    height, width = image_hw
    if len(points) + len(boxes) == 0:
        raise PromptError("no prompt given: pass --points x,y and / or --boxes x0,y0,x1,y1")
    for x, y in points:
        if not (0 <= x <= width and 0 <= y <= height):
            raise PromptError(f"point {x:g},{y:g} lies outside the {width}x{height} image")
    for x0, y0, x1, y1 in boxes:
        text = f"{x0:g},{y0:g},{x1:g},{y1:g}"
        if not (x0 < x1 and y0 < y1):
            raise PromptError(f"box {text} is empty or inverted: give x0,y0,x1,y1 with x0 < x1 and y0 < y1")
        if not (0 <= x0 and 0 <= y0 and x1 <= width and y1 <= height):
            raise PromptError(f"box {text} lies outside the {width}x{height} image")


def grid_prompts(height: int, width: int, count: int, num_classes: int = 1) -> Prompts:
    """`count` one-point prompts on a regular grid, independent of any dense map (eval's sam-vote, bench).

    The grid is the smallest square one with ≥ count cells, side n: points at the cell centres
    ((i + 0.5)·W/n, (j + 0.5)·H/n) floored to pixels (image frame), row-major, the first `count` kept.
    class_ids: i mod num_classes; scores: evenly from 0.9 down to 0.5 (a fixed merge order); boxes: a square
    of one cell's size (at least 8 pixels) around the point; areas: the box's area.
    """
    side = int(np.ceil(np.sqrt(count)))
    centres = np.arange(side, dtype=np.float64) + 0.5
    ys, xs = np.meshgrid(centres * height / side, centres * width / side, indexing="ij")  # [n, n]
    coords = np.floor(np.stack([xs.ravel(), ys.ravel()], axis=1))[:count].astype(np.float32)  # [B, 2]
    half = np.float32(max(4.0, min(height, width) / (2 * side)))
    return Prompts(
        coords=coords[:, None, :],
        labels=np.ones((count, 1), np.int32),
        class_ids=(np.arange(count) % num_classes).astype(np.int32),
        scores=np.linspace(0.9, 0.5, count, dtype=np.float32),
        boxes=np.concatenate([coords - half, coords + half], axis=1),
        areas=np.full(count, int((2 * half) ** 2), np.int64),
    )
