"""SCLIP's dense prediction on numpy: sliding windows over the resized image, per-patch cosine logits against
the text features, overlap averaging, softmax with a logit scale, max over synonyms, area and probability
thresholds. The network is any `encode_crops` callable (torch reference, ONNX Runtime, TensorRT).

Frames: "network" = the image after `sclip_resize_shape` (what the windows slide over); "image" = the
original H×W. Logits are averaged in the network frame, then resized bilinearly to the image frame, where
probabilities and predictions are computed (as the official code does before scoring).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from clipsam.engine.errors import ClipsamError, InputImageError
from clipsam.engine.transforms import resize_bilinear, sclip_preprocess
from clipsam.engine.types import DenseMap
from clipsam.engine.vocabulary import Vocabulary

# crops float32 [N, 3, h, w] (CLIP-normalised) -> L2-normalised patch features [N, (h//p)·(w//p), D]
EncodeCrops = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class DenseConfig:
    """SCLIP inference settings (defaults: the official ones for datasets without a background class).

    short_side: resize so the short side is this (keeping the ratio, long side ≤ long_cap); 0 = no resize.
    crop, stride: sliding-window size and step in network pixels.
    logit_scale: multiplies the cosine logits before the softmax over queries.
    prob_thd: pixels whose top class probability is below it become class 0.
    area_thd: if set, a foreground class whose argmax area is ≤ area_thd × all foreground argmax area has
        its probabilities zeroed.
    """

    short_side: int = 336
    crop: int = 224
    stride: int = 112
    logit_scale: float = 40.0
    prob_thd: float = 0.0
    area_thd: float | None = None
    long_cap: int = 2048

    def __post_init__(self) -> None:
        area_ok = self.area_thd is None or 0.0 <= self.area_thd <= 1.0
        checks = [
            (self.short_side >= 0, f"short side must be ≥ 0 (0 = no resize), got {self.short_side}"),
            (self.crop > 0, f"slide crop must be > 0, got {self.crop}"),
            (
                0 < self.stride <= self.crop,
                f"slide stride must be in 1..{self.crop} (the crop), got {self.stride}",
            ),
            (0 < self.logit_scale < float("inf"), f"logit scale must be finite, > 0, got {self.logit_scale}"),
            (0.0 <= self.prob_thd <= 1.0, f"prob_thd must be in [0, 1], got {self.prob_thd}"),
            (area_ok, f"area_thd must be in [0, 1], got {self.area_thd}"),
            (self.long_cap > 0, f"long side cap must be > 0, got {self.long_cap}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ClipsamError(message)


# The official per-dataset settings (FACTS.md; SCLIP's configs/cfg_*.py).
PRESETS: dict[str, DenseConfig] = {
    "voc21": DenseConfig(short_side=336, logit_scale=65.0, prob_thd=0.1, area_thd=0.1),
    "context60": DenseConfig(short_side=336, logit_scale=50.0, prob_thd=0.1),
    "coco-object": DenseConfig(short_side=336, logit_scale=50.0, prob_thd=0.1),
    "voc20": DenseConfig(short_side=336),
    "context59": DenseConfig(short_side=336),
    "coco-stuff164k": DenseConfig(short_side=448),
    "cityscapes": DenseConfig(short_side=560),
    "ade20k": DenseConfig(short_side=336),
}


def slide_windows(height: int, width: int, crop: int, stride: int) -> list[tuple[int, int, int, int]]:
    """(y0, y1, x0, x1) windows in row-major order, as mmseg's slide inference: a grid of `stride` steps,
    the last window moved back to end on the border, and windows shrunk to the image where it is smaller
    than `crop` (no padding). All windows have the same size: min(crop, height) × min(crop, width)."""
    rows = max(height - crop + stride - 1, 0) // stride + 1
    cols = max(width - crop + stride - 1, 0) // stride + 1
    windows = []
    for row in range(rows):
        for col in range(cols):
            y1, x1 = min(row * stride + crop, height), min(col * stride + crop, width)
            windows.append((max(y1 - crop, 0), y1, max(x1 - crop, 0), x1))
    return windows


def crop_logits(
    patch_features: np.ndarray, text_features: np.ndarray, crop_hw: tuple[int, int], patch_size: int
) -> np.ndarray:
    """Per-crop logits at crop resolution.

    patch_features: float32 [N, L, D] L2-normalised, L = (h // p)·(w // p) row-major.
    text_features: float32 [Q, D] L2-normalised. Returns float32 [N, Q, h, w]: cosine logits on the patch
    grid, bilinear (align_corners=False) to the crop size.
    """
    grid_h, grid_w = crop_hw[0] // patch_size, crop_hw[1] // patch_size
    num_crops, num_patches, _ = patch_features.shape
    assert num_patches == grid_h * grid_w, (patch_features.shape, crop_hw, patch_size)
    logits = patch_features @ text_features.T  # [N, L, Q]
    logits = logits.reshape(num_crops, grid_h, grid_w, -1).transpose(0, 3, 1, 2)  # [N, Q, gh, gw]
    return resize_bilinear(logits, crop_hw)


class DensePredictor:
    """SCLIP dense class map of one image from an `encode_crops` network and cached text features.

    encode_crops: see EncodeCrops; called ONCE per image with all windows.
    text_features: float32 [Q, D], one L2-normalised row per query of `vocabulary` (same order).
    patch_size: the ViT patch size of the network (16 for ViT-B/16).
    """

    def __init__(
        self,
        encode_crops: EncodeCrops,
        text_features: np.ndarray,
        vocabulary: Vocabulary,
        config: DenseConfig | None = None,
        patch_size: int = 16,
    ):
        text_features = np.asarray(text_features, dtype=np.float32)
        assert text_features.ndim == 2 and text_features.shape[0] == vocabulary.num_queries, (
            text_features.shape
        )
        self.encode_crops = encode_crops
        self.text_features = text_features
        self.vocabulary = vocabulary
        self.config = config if config is not None else DenseConfig()
        self.patch_size = patch_size
        # First query of each class: queries of a class are contiguous, so a max over synonyms is a reduceat.
        self._class_starts = np.searchsorted(vocabulary.query_class, np.arange(vocabulary.num_classes))

    def predict(self, image_u8: np.ndarray) -> DenseMap:
        """uint8 RGB [H, W, 3] -> DenseMap with probs [C, H, W] and pred [H, W] in the image frame."""
        assert image_u8.dtype == np.uint8 and image_u8.ndim == 3 and image_u8.shape[2] == 3, image_u8.shape
        network_image = sclip_preprocess(image_u8, self.config.short_side, self.config.long_cap)
        logits = self.slide_logits(network_image, out_hw=image_u8.shape[:2])
        probs, pred = self.postprocess(logits)
        return DenseMap(probs=probs, pred=pred, class_names=self.vocabulary.class_names)

    def slide_logits(self, image_normalized: np.ndarray, out_hw: tuple[int, int] | None = None) -> np.ndarray:
        """Sliding-window logits.

        image_normalized: float32 [3, h, w] CLIP-normalised, network frame.
        out_hw: size to resize the averaged logits to (the image frame); None keeps (h, w).
        Returns float32 [Q, *out_hw]: overlapping windows' logits summed, divided by the overlap count,
        then bilinear (align_corners=False).
        """
        _, height, width = image_normalized.shape
        crop, stride = self.config.crop, self.config.stride
        if min(height, width) < self.patch_size:
            raise InputImageError(
                f"image is {height}×{width} after resizing, smaller than the {self.patch_size}-pixel CLIP "
                "patch: use a larger image or a larger short side"
            )
        windows = slide_windows(height, width, crop, stride)
        crops = np.stack([image_normalized[:, y0:y1, x0:x1] for y0, y1, x0, x1 in windows])  # [N, 3, ch, cw]
        features = np.asarray(self.encode_crops(np.ascontiguousarray(crops)), dtype=np.float32)
        logit_sum = np.zeros((self.vocabulary.num_queries, height, width), np.float32)  # [Q, h, w]
        count = np.zeros((height, width), np.float32)
        for index, (y0, y1, x0, x1) in enumerate(windows):
            window = crop_logits(
                features[index : index + 1], self.text_features, (y1 - y0, x1 - x0), self.patch_size
            )
            logit_sum[:, y0:y1, x0:x1] += window[0]
            count[y0:y1, x0:x1] += 1
        logits = logit_sum / count
        if out_hw is not None and tuple(out_hw) != (height, width):
            logits = resize_bilinear(logits, out_hw)
        return logits

    def postprocess(self, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Query logits float32 [Q, H, W] -> (probs float32 [C, H, W], pred int32 [H, W]).

        probs: softmax over queries of logit_scale·logits, max over each class's synonyms, area_thd applied.
        pred: argmax class (first on ties), 0 where the top probability is below prob_thd.
        """
        query_probs = _softmax_over_queries(logits * np.float32(self.config.logit_scale))
        if self.vocabulary.num_classes == self.vocabulary.num_queries:
            probs = query_probs
        else:
            probs = np.maximum.reduceat(query_probs, self._class_starts, axis=0)  # [C, H, W]
        if self.config.area_thd is not None:
            _suppress_small_classes(probs, self.config.area_thd)
        pred = probs.argmax(axis=0).astype(np.int32)
        pred[probs.max(axis=0) < self.config.prob_thd] = 0
        return probs, pred


def _softmax_over_queries(scaled: np.ndarray) -> np.ndarray:
    """Softmax along axis 0 of float32 [Q, H, W], computed in place on `scaled`."""
    scaled -= scaled.max(axis=0, keepdims=True)
    np.exp(scaled, out=scaled)
    scaled /= scaled.sum(axis=0, keepdims=True)
    return scaled


def _suppress_small_classes(probs: np.ndarray, area_thd: float) -> None:
    """Zero (in place) the probabilities of each foreground class whose argmax area is ≤ area_thd × the
    total foreground argmax area. probs: float32 [C, H, W], class 0 = background (never suppressed)."""
    areas = np.bincount(probs.argmax(axis=0).ravel(), minlength=probs.shape[0])[1:].astype(np.float64)
    keep = areas > area_thd * areas.sum()
    probs[1:] *= keep.astype(np.float32)[:, None, None]
