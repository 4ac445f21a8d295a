"""Multi-class connected components with per-component statistics in one run-based pass.

The prompt stage labels SCLIP's dense class map and needs, per connected region: its class, area, bounding
box, centroid, and the sum / max (and argmax location) of a per-pixel score map. Labeling each class
separately costs one full image pass per class; here one pass finds runs, joins them with union-find
(`_runs.label_runs`), and the statistics are accumulated per run rather than per pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from ._runs import label_runs

CLASS_MAP_DTYPES = (np.dtype(np.uint8), np.dtype(np.int16), np.dtype(np.int32))


@dataclass(frozen=True)
class Components:
    """Per-component arrays; component k (0-based) is label k + 1 in `labels`.

    count: number of components n.
    class_id: int32 [n], the class id shared by the component's pixels.
    area: int64 [n], pixel count.
    bbox: int32 [n, 4], (x0, y0, x1, y1) in pixels of the class map, x1 / y1 exclusive.
    centroid: float64 [n, 2], (x, y) mean pixel coordinates.
    score_sum: float64 [n], sum of the score map over the component (zeros without scores).
    score_max: float32 [n], max of the score map over the component (zeros without scores).
    score_argmax: int32 [n, 2], (x, y) of the first max in raster order (zeros without scores).
    labels: int32 [H, W] or None; 0 = in no component, components numbered 1..n in raster order of their
        first pixel.
    """

    count: int
    class_id: np.ndarray
    area: np.ndarray
    bbox: np.ndarray
    centroid: np.ndarray
    score_sum: np.ndarray
    score_max: np.ndarray
    score_argmax: np.ndarray
    labels: np.ndarray | None


@njit(cache=True, nogil=True)
def _run_stats(run_row, run_start, run_end, run_class, run_component, n_components):
    """Class, area, bbox, centroid of each component, accumulated per run (exact integer sums)."""
    class_id = np.zeros(n_components, np.int32)
    area = np.zeros(n_components, np.int64)
    bbox = np.empty((n_components, 4), np.int32)
    bbox[:, 0] = np.iinfo(np.int32).max
    bbox[:, 1] = np.iinfo(np.int32).max
    bbox[:, 2] = 0
    bbox[:, 3] = 0
    sum_x = np.zeros(n_components, np.int64)
    sum_y = np.zeros(n_components, np.int64)
    for run in range(run_row.shape[0]):
        comp = run_component[run]
        y = np.int64(run_row[run])
        start = np.int64(run_start[run])
        end = np.int64(run_end[run])
        length = end - start
        class_id[comp] = run_class[run]
        area[comp] += length
        # sum of x over start..end-1, an arithmetic series
        sum_x[comp] += (start + end - 1) * length // 2
        sum_y[comp] += y * length
        bbox[comp, 0] = min(bbox[comp, 0], start)
        bbox[comp, 1] = min(bbox[comp, 1], y)
        bbox[comp, 2] = max(bbox[comp, 2], end)
        bbox[comp, 3] = max(bbox[comp, 3], y + 1)
    centroid = np.empty((n_components, 2), np.float64)
    for comp in range(n_components):
        centroid[comp, 0] = sum_x[comp] / area[comp]
        centroid[comp, 1] = sum_y[comp] / area[comp]
    return class_id, area, bbox, centroid


@njit(cache=True, nogil=True)
def _score_stats(scores, run_row, run_start, run_end, run_component, n_components):
    """Sum, max and first argmax (raster order) of the score map per component."""
    score_sum = np.zeros(n_components, np.float64)
    score_max = np.zeros(n_components, np.float32)
    score_argmax = np.zeros((n_components, 2), np.int32)
    seen = np.zeros(n_components, np.bool_)
    # Runs are in raster order, so a strict ">" keeps the first maximum of each component.
    for run in range(run_row.shape[0]):
        comp = run_component[run]
        y = run_row[run]
        row = scores[y]
        best = score_max[comp]
        best_x = score_argmax[comp, 0]
        best_y = score_argmax[comp, 1]
        if not seen[comp]:
            seen[comp] = True
            best = row[run_start[run]]
            best_x = run_start[run]
            best_y = y
        total = 0.0
        for x in range(run_start[run], run_end[run]):
            value = row[x]
            total += value
            if value > best:
                best = value
                best_x = x
                best_y = y
        score_sum[comp] += total
        score_max[comp] = best
        score_argmax[comp, 0] = best_x
        score_argmax[comp, 1] = best_y
    return score_sum, score_max, score_argmax


@njit(cache=True, nogil=True)
def _paint_labels(shape_hw, run_row, run_start, run_end, run_component):
    labels = np.zeros(shape_hw, np.int32)
    for run in range(run_row.shape[0]):
        labels[run_row[run], run_start[run] : run_end[run]] = run_component[run] + 1
    return labels


@njit(cache=True, nogil=True)
def components_kernel(class_map, ignore, has_ignore, connect8, scores, has_scores, return_labels):
    """All of `connected_components` below the argument checks; see there for the meaning of the outputs."""
    run_row, run_start, run_end, run_class, run_component, n = label_runs(
        class_map, ignore, has_ignore, connect8
    )
    class_id, area, bbox, centroid = _run_stats(run_row, run_start, run_end, run_class, run_component, n)
    if has_scores:
        score_sum, score_max, score_argmax = _score_stats(
            scores, run_row, run_start, run_end, run_component, n
        )
    else:
        score_sum = np.zeros(n, np.float64)
        score_max = np.zeros(n, np.float32)
        score_argmax = np.zeros((n, 2), np.int32)
    if return_labels:
        labels = _paint_labels(class_map.shape, run_row, run_start, run_end, run_component)
    else:
        labels = np.zeros((0, 0), np.int32)
    return n, class_id, area, bbox, centroid, score_sum, score_max, score_argmax, labels


def _check_class_map(class_map: np.ndarray) -> np.ndarray:
    if not isinstance(class_map, np.ndarray) or class_map.ndim != 2:
        raise ValueError(f"class_map must be a 2-D numpy array [H, W], got {_describe(class_map)}")
    if class_map.dtype == np.bool_:
        class_map = class_map.view(np.uint8)
    if class_map.dtype not in CLASS_MAP_DTYPES:
        raise ValueError(f"class_map dtype must be uint8, int16 or int32 (or bool), got {class_map.dtype}")
    return np.ascontiguousarray(class_map)


def _check_scores(scores: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    if scores is None:
        return np.zeros((1, 1), np.float32)
    if not isinstance(scores, np.ndarray) or scores.dtype != np.float32:
        raise ValueError(f"scores must be a float32 numpy array, got {_describe(scores)}")
    if scores.shape != shape:
        raise ValueError(f"scores shape {scores.shape} must equal class_map shape {shape}")
    return np.ascontiguousarray(scores)


def _describe(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"array of shape {value.shape} and dtype {value.dtype}"
    return type(value).__name__


def connected_components(
    class_map: np.ndarray,
    connectivity: int = 8,
    ignore: int | None = None,
    scores: np.ndarray | None = None,
    return_labels: bool = False,
) -> Components:
    """Label every class of a class map at once and measure each connected component.

    class_map: uint8 / int16 / int32 (or bool) [H, W] class ids, any strides (non-contiguous input is copied).
    connectivity: 4 or 8.
    ignore: a class id whose pixels form no component (e.g. background), or None.
    scores: optional float32 [H, W] per-pixel score map, same frame as class_map.
    return_labels: also return the int32 [H, W] label image (skipped otherwise: it costs a full image write).
    Components are numbered in raster order of their first pixel; see `Components` for the fields.
    """
    class_map = _check_class_map(class_map)
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity!r}")
    if ignore is not None and not isinstance(ignore, int | np.integer):
        raise ValueError(f"ignore must be an int class id or None, got {type(ignore).__name__}")
    score_map = _check_scores(scores, class_map.shape)
    out = components_kernel(
        class_map,
        np.int64(0 if ignore is None else ignore),
        ignore is not None,
        connectivity == 8,
        score_map,
        scores is not None,
        bool(return_labels),
    )
    n, class_id, area, bbox, centroid, score_sum, score_max, score_argmax, labels = out
    return Components(
        count=int(n),
        class_id=class_id,
        area=area,
        bbox=bbox,
        centroid=centroid,
        score_sum=score_sum,
        score_max=score_max,
        score_argmax=score_argmax,
        labels=labels if return_labels else None,
    )
