"""Multi-class connected components with per-component statistics in one run-based pass.

The prompt stage labels SCLIP's dense class map and needs, per connected region: its class, area, bounding
box, centroid, and the sum / max (and argmax location) of a per-pixel score map. Labeling each class
separately costs one full image pass per class; here one pass finds runs, joins them with union-find
(`_runs.label_runs`), and the statistics are accumulated per run rather than per pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._lazy import LazyModule

_stats = LazyModule("clipsam.kernels._component_stats")  # numba: imported on first call

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
    out = _stats.components_kernel(
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
