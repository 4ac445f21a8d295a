"""Issue 26's accuracy mode on numpy: SAM2's regions correct CLIP. Torch-free.

Definitions (tests/reference/regions_reference.py implements the same with loops):
- regions: SAM2 on the image's own embedding with a regular grid of `points_per_side`² one-point prompts
  (`grid_prompts`), best of 3 by predicted IoU; masks with predicted IoU ≥ `min_iou` and area ≥
  `min_region_size` are kept; duplicates dropped class-agnostically (greedy by predicted IoU, IoU >
  `dedupe_iou`, the merge's kernels); the survivors painted onto one int32 map in ascending area order (equal
  areas: higher predicted IoU first), so a larger mask overwrites a smaller one; 0 = no mask.
- patch region id: the region map is taken to SCLIP's network frame by nearest neighbour (pixel centres
  aligned: source = floor((y + 0.5)·H / h), clamped); a window's patch gets the id held by most of its p×p
  pixels, region 0 counted like any id (ties: the lower id).
- vote: after the dense map's argmax, every non-zero region's pixels take the region's majority class (ties:
  the lower class id); region-0 pixels keep theirs; the probabilities are left as they are.
The attention restricted by the ids: the exported `sclip_tower_regions` graph (export/onnx_sclip_regions.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from clipsam.engine.errors import ClipsamError
from clipsam.engine.prompts import grid_prompts
from clipsam.engine.types import DenseMap, Prompts, RegionMap, RleCandidates
from clipsam.kernels import masks as mask_ops
from clipsam.kernels import rle as rle_codec

MAX_POINTS_PER_SIDE = 64


@dataclass(frozen=True)
class RegionOptions:
    """The accuracy mode's settings (`--regions`, `--region-points`, `--region-iou`, `--min-region-size`)."""

    points_per_side: int = 8
    min_iou: float = 0.7
    min_region_size: int = 100
    dedupe_iou: float = 0.7

    def __post_init__(self) -> None:
        checks = [
            (
                1 <= self.points_per_side <= MAX_POINTS_PER_SIDE,
                f"--region-points must be in 1..{MAX_POINTS_PER_SIDE}, got {self.points_per_side}",
            ),
            (0.0 <= self.min_iou <= 1.0, f"--region-iou must be in [0, 1], got {self.min_iou}"),
            (self.min_region_size >= 0, f"--min-region-size must be ≥ 0, got {self.min_region_size}"),
            (0.0 <= self.dedupe_iou <= 1.0, f"region dedupe IoU must be in [0, 1], got {self.dedupe_iou}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ClipsamError(message)

    def record(self) -> dict:
        """The JSON's models.regions: the mode and its settings."""
        return {
            "mode": "regions",
            "source": "grid",
            "points_per_side": self.points_per_side,
            "region_iou": self.min_iou,
            "min_region_size": self.min_region_size,
            "dedupe_iou": self.dedupe_iou,
        }


def region_prompts(image_hw: tuple[int, int], options: RegionOptions) -> Prompts:
    """The points_per_side² grid prompts of the image frame (one class, `grid_prompts`)."""
    return grid_prompts(int(image_hw[0]), int(image_hw[1]), options.points_per_side**2)


def regions_from_candidates(
    candidates: RleCandidates, image_hw: tuple[int, int], options: RegionOptions
) -> RegionMap:
    """The region map of the grid prompts' decoded masks (RLEs in the image frame, predicted IoU [B])."""
    height, width = int(image_hw[0]), int(image_hw[1])
    labels = np.zeros((height, width), np.int32)
    settings = MappingProxyType(options.record())
    if len(candidates) == 0:
        return RegionMap(labels=labels, iou=np.zeros(0, np.float32), settings=settings)
    iou = np.asarray(candidates.iou, np.float32)
    areas = np.asarray(rle_codec.area(candidates.rles), np.int64).reshape(-1)
    passing = np.flatnonzero((iou >= options.min_iou) & (areas >= options.min_region_size))
    if passing.size == 0:
        return RegionMap(labels=labels, iou=np.zeros(0, np.float32), settings=settings)
    rles = [candidates.rles[i] for i in passing]
    survivors = passing[mask_ops.nms(rles, iou[passing], options.dedupe_iou)]  # best predicted IoU first
    order = survivors[np.lexsort((np.arange(survivors.size), areas[survivors]))]  # ascending area, stable
    for region_id, index in enumerate(order, start=1):
        labels[rle_codec.decode(candidates.rles[index]).astype(bool)] = region_id
    return RegionMap(labels=labels, iou=iou[order], settings=settings)


def network_labels(labels: np.ndarray, network_hw: tuple[int, int]) -> np.ndarray:
    """int32 [H, W] region map (image frame) → int32 [h, w] (network frame), nearest neighbour."""
    height, width = labels.shape
    rows = np.minimum(
        ((np.arange(network_hw[0]) + 0.5) * height / network_hw[0]).astype(np.int64), height - 1
    )
    cols = np.minimum(((np.arange(network_hw[1]) + 0.5) * width / network_hw[1]).astype(np.int64), width - 1)
    return labels[rows[:, None], cols[None, :]]


def patch_regions(
    regions: RegionMap,
    windows: tuple[tuple[int, int, int, int], ...],
    network_hw: tuple[int, int],
    patch_size: int,
) -> np.ndarray:
    """int32 [N, L]: the region id of each window's patches (L = (h // p)·(w // p), row-major), windows
    (y0, y1, x0, x1) in the network frame; the majority id of the patch's pixels, ties to the lower id."""
    network = network_labels(regions.labels, network_hw)
    ids = regions.count + 1
    rows = []
    for y0, y1, x0, x1 in windows:
        grid_h, grid_w = (y1 - y0) // patch_size, (x1 - x0) // patch_size
        block = network[y0 : y0 + grid_h * patch_size, x0 : x0 + grid_w * patch_size]
        block = block.reshape(grid_h, patch_size, grid_w, patch_size).transpose(0, 2, 1, 3)
        block = block.reshape(grid_h * grid_w, patch_size * patch_size)  # [L, p²]
        offsets = np.arange(grid_h * grid_w, dtype=np.int64)[:, None] * ids
        counts = np.bincount((block + offsets).ravel(), minlength=grid_h * grid_w * ids)
        rows.append(counts.reshape(grid_h * grid_w, ids).argmax(axis=1))  # argmax: first (lower) id on ties
    return np.ascontiguousarray(np.stack(rows), dtype=np.int32)


def vote(dense: DenseMap, regions: RegionMap) -> DenseMap:
    """The dense map with every non-zero region's pixels set to the region's majority class of `dense.pred`
    (ties: lower class id); region-0 pixels and the probabilities float32 [C, H, W] unchanged."""
    labels, pred = regions.labels, dense.pred
    if labels.shape != pred.shape:
        raise ClipsamError(
            f"the region map is {labels.shape}, the dense map {pred.shape}: one image for both"
        )
    classes = len(dense.class_names)
    ids = regions.count + 1
    counts = np.bincount((labels.astype(np.int64) * classes + pred).ravel(), minlength=ids * classes).reshape(
        ids, classes
    )
    winners = counts.argmax(axis=1).astype(np.int32)  # first (lower) class on ties
    voted = np.where(labels > 0, winners[labels], pred).astype(np.int32)
    return DenseMap(probs=dense.probs, pred=voted, class_names=dense.class_names)
