"""Metrics against a hand-computed confusion matrix, and PAMR against its definition."""

from __future__ import annotations

import numpy as np
import pytest

from clipsam.engine.eval.metrics import confusion_matrix, metrics_from_confusion
from clipsam.engine.eval.pamr import pamr, pamr_affinity


def test_confusion_matrix_by_hand():
    gt = np.array([[0, 0, 1, 1], [2, 2, 255, 1]], np.uint8)
    pred = np.array([[0, 1, 1, 1], [2, 0, 2, 2]], np.int32)
    # rows gt, cols pred: gt0 → (0, 1); gt1 → (1, 1, 2); gt2 → (2, 0); the 255 pixel is skipped.
    expected = np.array([[1, 1, 0], [0, 2, 1], [1, 0, 1]])
    np.testing.assert_array_equal(confusion_matrix(gt, pred, 3), expected)


def test_metrics_by_hand_over_two_images():
    gt_a = np.array([[0, 0, 1, 1], [2, 2, 255, 1]], np.uint8)
    pred_a = np.array([[0, 1, 1, 1], [2, 0, 2, 2]], np.int32)
    gt_b = np.array([[3, 3], [0, 255]], np.uint8)  # class 3 is never predicted
    pred_b = np.array([[0, 0], [0, 3]], np.int32)
    matrix = confusion_matrix(gt_a, pred_a, 4) + confusion_matrix(gt_b, pred_b, 4)
    # accumulated: TP = [2, 2, 1, 0]; gt rows = [3, 3, 2, 2]; pred cols = [5, 3, 2, 0]
    metrics = metrics_from_confusion(matrix)
    iou = np.array([2 / (3 + 5 - 2), 2 / (3 + 3 - 2), 1 / (2 + 2 - 1), 0 / 2]) * 100
    acc = np.array([2 / 3, 2 / 3, 1 / 2, 0]) * 100
    np.testing.assert_allclose(metrics.iou, iou)
    np.testing.assert_allclose(metrics.acc, acc)
    assert metrics.miou == pytest.approx(iou.mean())
    assert metrics.macc == pytest.approx(acc.mean())
    assert metrics.aacc == pytest.approx(5 / 10 * 100)


def test_absent_class_is_nan_and_left_out_of_the_mean():
    matrix = np.array([[4, 0, 0], [0, 0, 0], [1, 0, 5]])  # class 1 neither labelled nor predicted
    metrics = metrics_from_confusion(matrix)
    assert np.isnan(metrics.iou[1]) and np.isnan(metrics.acc[1])
    assert metrics.miou == pytest.approx((4 / 5 + 5 / 6) / 2 * 100)


def test_predicted_but_unlabelled_class_counts_zero():
    matrix = np.array([[3, 1], [0, 0]])  # class 1 predicted once, never in the ground truth
    metrics = metrics_from_confusion(matrix)
    assert metrics.iou[1] == 0.0 and np.isnan(metrics.acc[1])
    assert metrics.miou == pytest.approx(37.5)


def test_out_of_range_ids_are_rejected():
    with pytest.raises(ValueError, match="prediction holds ids outside"):
        confusion_matrix(np.zeros((2, 2), np.uint8), np.full((2, 2), 5), 3)
    with pytest.raises(ValueError, match="ground truth holds ids outside"):
        confusion_matrix(np.full((2, 2), 7, np.uint8), np.zeros((2, 2)), 3)


def _pamr_by_definition(image, logits, steps, dilations):
    """Pixel loops over the module doc's definition (tiny sizes only)."""
    channels, height, width = image.shape
    offsets = [
        (dy * d, dx * d) for d in dilations for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)
    ]

    def at(array, y, x):
        return array[:, min(max(y, 0), height - 1), min(max(x, 0), width - 1)]

    weights = np.zeros((len(offsets), height, width))
    for y in range(height):
        for x in range(width):
            centre = image[:, y, x].astype(np.float64)
            samples = []
            for d in dilations:
                samples.append(centre)
                samples += [
                    at(image, y + dy * d, x + dx * d) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx
                ]
            sigma = np.std(np.stack(samples), axis=0, ddof=1)
            scores = [
                (-np.abs(centre - at(image, y + oy, x + ox)) / (1e-8 + 0.1 * sigma)).mean()
                for oy, ox in offsets
            ]
            scores = np.exp(np.array(scores) - max(scores))
            weights[:, y, x] = scores / scores.sum()
    current = logits.astype(np.float64)
    for _ in range(steps):
        new = np.zeros_like(current)
        for y in range(height):
            for x in range(width):
                for k, (oy, ox) in enumerate(offsets):
                    new[:, y, x] += weights[k, y, x] * at(current, y + oy, x + ox)
        current = new
    return weights, current


def test_pamr_matches_its_definition():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(3, 7, 9)).astype(np.float32)
    image[:, :, :4] += 3.0  # an edge the refinement must respect
    logits = rng.normal(size=(4, 7, 9)).astype(np.float32)
    weights, refined = _pamr_by_definition(image, logits, steps=3, dilations=(1, 2))
    np.testing.assert_allclose(pamr_affinity(image, (1, 2)), weights, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(pamr(image, logits, steps=3, dilations=(1, 2)), refined, rtol=1e-4, atol=1e-5)


def test_pamr_keeps_constant_logits_and_defaults_to_the_sclip_setting():
    rng = np.random.default_rng(1)
    image = rng.normal(size=(3, 20, 24)).astype(np.float32)
    logits = np.broadcast_to(np.arange(3, dtype=np.float32)[:, None, None], (3, 20, 24)).copy()
    np.testing.assert_allclose(pamr(image, logits), logits, atol=1e-5)
    assert pamr.__defaults__ == (10, (8, 16))
