"""Semantic-segmentation metrics as MMSegmentation 1.x's IoUMetric computes them, on numpy.

One confusion matrix is accumulated over the whole dataset (intersection and union summed over images, never
averaged per image); pixels whose ground truth is the ignore index do not count.
- IoU[c] = TP / (TP + FP + FN); NaN when class c is neither in the ground truth nor predicted.
- Acc[c] = TP / (TP + FN); NaN when class c is absent from the ground truth.
- mIoU / mAcc = NaN-mean over classes; aAcc = all TP / all labelled pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IGNORE_INDEX = 255


def confusion_matrix(
    gt: np.ndarray, pred: np.ndarray, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> np.ndarray:
    """int64 [C, C], rows = ground-truth class, columns = predicted class, of one image.

    gt: integer [H, W] class ids in 0..C-1 or `ignore_index`. pred: integer [H, W] class ids in 0..C-1
    (same frame as gt). Pixels whose gt is ignore_index are skipped.
    """
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth {gt.shape} and prediction {pred.shape} differ in size")
    valid = gt != ignore_index
    gt_valid = gt[valid].astype(np.int64)
    pred_valid = pred[valid].astype(np.int64)
    if gt_valid.size and (gt_valid.min() < 0 or gt_valid.max() >= num_classes):
        raise ValueError(f"ground truth holds ids outside 0..{num_classes - 1} and {ignore_index}")
    if pred_valid.size and (pred_valid.min() < 0 or pred_valid.max() >= num_classes):
        raise ValueError(f"prediction holds ids outside 0..{num_classes - 1}")
    counts = np.bincount(gt_valid * num_classes + pred_valid, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


@dataclass(frozen=True)
class SegMetrics:
    """Dataset-level metrics in percent.

    iou, acc: float64 [C] (NaN where undefined, see module doc). miou, macc, aacc: floats.
    gt_pixels, pred_pixels: int64 [C], labelled / predicted pixels per class (ignored pixels excluded).
    """

    iou: np.ndarray
    acc: np.ndarray
    miou: float
    macc: float
    aacc: float
    gt_pixels: np.ndarray
    pred_pixels: np.ndarray


def metrics_from_confusion(matrix: np.ndarray) -> SegMetrics:
    """mIoU, per-class IoU, aAcc, mAcc (percent) of an int64 [C, C] confusion matrix (rows = gt)."""
    matrix = np.asarray(matrix, dtype=np.int64)
    true_positive = np.diag(matrix).astype(np.float64)
    gt_pixels = matrix.sum(axis=1)
    pred_pixels = matrix.sum(axis=0)
    union = (gt_pixels + pred_pixels).astype(np.float64) - true_positive
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, true_positive / union, np.nan) * 100.0
        acc = np.where(gt_pixels > 0, true_positive / gt_pixels, np.nan) * 100.0
    total = gt_pixels.sum()
    return SegMetrics(
        iou=iou,
        acc=acc,
        miou=_nanmean(iou),
        macc=_nanmean(acc),
        aacc=float(true_positive.sum() / total * 100.0) if total else float("nan"),
        gt_pixels=gt_pixels,
        pred_pixels=pred_pixels,
    )


def running_miou(matrix: np.ndarray) -> float:
    """mIoU (percent) of the images accumulated so far; NaN before any labelled pixel."""
    return metrics_from_confusion(matrix).miou


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")
