"""The numba kernels of `components.connected_components`: statistics per run, gathered per component."""

import numpy as np
from numba import njit

from ._runs import label_runs


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
