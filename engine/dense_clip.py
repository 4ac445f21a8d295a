"""SCLIP's dense prediction on numpy: sliding windows over the resized image, per-patch cosine logits against
the text features, overlap averaging, softmax with a logit scale, max over synonyms, area and probability
thresholds. The network is any runtime's image tower (`CropEncoder`) and text features (`TextEncoder`):
torch reference, ONNX Runtime, OpenVINO, TensorRT.

Frames: "network" = the image after `sclip_resize_shape` (what the windows slide over); "image" = the
original H×W. Logits are averaged in the network frame, then resized bilinearly to the image frame, where
probabilities and predictions are computed (as the official code does before scoring).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

import numpy as np

from clipsam.engine.errors import ClipsamError, InputImageError
from clipsam.engine.regions import patch_regions
from clipsam.engine.transforms import resize_bilinear, sclip_preprocess
from clipsam.engine.types import DenseMap, PatchFeatures, RegionMap, TextFeatures, WindowGeometry
from clipsam.engine.vocabulary import Vocabulary

if TYPE_CHECKING:  # the protocols (engine/stages.py) import this module for DenseConfig
    from clipsam.engine.stages import CropEncoder as CropEncoderLike
    from clipsam.engine.stages import TextEncoder as TextEncoderLike

# Query logits float32 [Q, H, W] (image frame) → refined logits of the same shape (e.g. PAMR in eval).
RefineLogits = Callable[[np.ndarray], np.ndarray]


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
PRESETS: Mapping[str, DenseConfig] = MappingProxyType(
    {
        "voc21": DenseConfig(short_side=336, logit_scale=65.0, prob_thd=0.1, area_thd=0.1),
        "context60": DenseConfig(short_side=336, logit_scale=50.0, prob_thd=0.1),
        "coco-object": DenseConfig(short_side=336, logit_scale=50.0, prob_thd=0.1),
        "voc20": DenseConfig(short_side=336),
        "context59": DenseConfig(short_side=336),
        "coco-stuff164k": DenseConfig(short_side=448),
        "cityscapes": DenseConfig(short_side=560),
        "ade20k": DenseConfig(short_side=336),
    }
)


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


class SclipStage:
    """SCLIP's dense stage (the DenseStage protocol of engine/stages.py) on any runtime's encoders.

    crops: the image tower (`encode_crops`, `patch_size`, `weights_id`); texts: the text features (`encode`).
    Holds no per-image state: safe to call from several threads when the encoders are.
    """

    def __init__(self, crops: CropEncoderLike, texts: TextEncoderLike):
        self.crops = crops
        self.texts = texts
        self.weights_id = crops.weights_id
        self.patch_size = crops.patch_size

    def text(self, vocabulary: Vocabulary) -> TextFeatures:
        """The vocabulary's query features, float32 [Q, D] in `vocabulary.queries` order."""
        features = np.asarray(self.texts.encode(list(vocabulary.queries)), dtype=np.float32)
        assert features.ndim == 2 and features.shape[0] == vocabulary.num_queries, features.shape
        return TextFeatures(vocabulary=vocabulary, features=features, weights=self.weights_id)

    def features(
        self, image: np.ndarray, config: DenseConfig, regions: RegionMap | None = None
    ) -> PatchFeatures:
        """uint8 [H, W, 3] RGB → every window's patch features, in ONE encode_crops call; with `regions`
        (image frame) the last block's attention is restricted to each patch's region (issue 26)."""
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3, image.shape
        network = sclip_preprocess(image, config.short_side, config.long_cap)  # [3, h, w]
        return window_features(self.crops, network, config, image_hw=image.shape[:2], regions=regions)

    def dense_map(
        self,
        features: PatchFeatures,
        text: TextFeatures,
        config: DenseConfig,
        refine: RefineLogits | None = None,
    ) -> DenseMap:
        """The dense map in the image frame: window logits averaged, resized, refined, softmax-ed."""
        check_same_source(features, text, config)
        logits = image_logits(features, text.features)
        if refine is not None:
            logits = refine(logits)
        probs, pred = class_probabilities(logits, text.vocabulary, config)
        return DenseMap(probs=probs, pred=pred, class_names=text.vocabulary.class_names)


def geometry(config: DenseConfig) -> WindowGeometry:
    """The part of `config` that decides the patch features (resize and windows)."""
    return WindowGeometry(config.short_side, config.crop, config.stride, config.long_cap)


def check_same_source(features: PatchFeatures, text: TextFeatures, config: DenseConfig) -> None:
    """Patch features and text features must come from one CLIP, and the config must cut the same windows."""
    if features.weights != text.weights:
        raise ClipsamError(
            f"patch features of CLIP weights {features.weights} cannot be scored against text features of "
            f"{text.weights}"
        )
    if features.geometry != geometry(config):
        raise ClipsamError(
            f"the patch features were made with {features.geometry}, the config asks for {geometry(config)}: "
            "compute the features with the same short side, crop and stride"
        )


def window_features(
    crops: CropEncoderLike,
    network: np.ndarray,
    config: DenseConfig,
    image_hw: tuple[int, int],
    regions: RegionMap | None = None,
) -> PatchFeatures:
    """The patch features of every sliding window of `network`, float32 [3, h, w] CLIP-normalised (network
    frame), in one `encode_crops` call; `image_hw` is the image frame the logits go back to. With `regions`
    (a RegionMap of the image frame), one `encode_crops_with_regions` call with each patch's region id."""
    _, height, width = network.shape
    if min(height, width) < crops.patch_size:
        raise InputImageError(
            f"image is {height}×{width} after resizing, smaller than the {crops.patch_size}-pixel CLIP "
            "patch: use a larger image or a larger short side"
        )
    windows = tuple(slide_windows(height, width, config.crop, config.stride))
    batch = np.ascontiguousarray(np.stack([network[:, y0:y1, x0:x1] for y0, y1, x0, x1 in windows]))
    if regions is None:
        features = np.asarray(crops.encode_crops(batch), dtype=np.float32)  # [N, L, D]
    else:
        ids = patch_regions(regions, windows, (int(height), int(width)), crops.patch_size)  # [N, L]
        features = np.asarray(_region_encoder(crops)(batch, ids), dtype=np.float32)
    return PatchFeatures(
        features=features,
        windows=windows,
        network_hw=(int(height), int(width)),
        image_hw=(int(image_hw[0]), int(image_hw[1])),
        geometry=geometry(config),
        patch_size=int(crops.patch_size),
        weights=crops.weights_id,
        regions="" if regions is None else regions.key,
    )


def _region_encoder(crops: CropEncoderLike) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The encoder's `encode_crops_with_regions`, or a ClipsamError when it has none."""
    encode = getattr(crops, "encode_crops_with_regions", None)
    if encode is None:
        raise ClipsamError(
            "this SCLIP tower has no region-restricted variant (--regions): re-export the artifacts with "
            "`clipsam export` (it writes sclip_tower_regions.onnx)"
        )
    return encode


def window_logits(features: PatchFeatures, text_features: np.ndarray) -> np.ndarray:
    """float32 [Q, h, w] in the network frame: each window's logits (crop_logits) summed where windows
    overlap and divided by the overlap count."""
    height, width = features.network_hw
    text_features = np.asarray(text_features, dtype=np.float32)
    logit_sum = np.zeros((text_features.shape[0], height, width), np.float32)  # [Q, h, w]
    count = np.zeros((height, width), np.float32)
    for index, (y0, y1, x0, x1) in enumerate(features.windows):
        window = crop_logits(
            features.features[index : index + 1], text_features, (y1 - y0, x1 - x0), features.patch_size
        )
        logit_sum[:, y0:y1, x0:x1] += window[0]
        count[y0:y1, x0:x1] += 1
    return logit_sum / count


def image_logits(features: PatchFeatures, text_features: np.ndarray) -> np.ndarray:
    """float32 [Q, H, W]: `window_logits` resized bilinearly (align_corners=False) to the image frame."""
    logits = window_logits(features, text_features)
    if tuple(features.image_hw) != tuple(features.network_hw):
        logits = resize_bilinear(logits, features.image_hw)
    return logits


def class_probabilities(
    logits: np.ndarray, vocabulary: Vocabulary, config: DenseConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Query logits float32 [Q, H, W] → (probs float32 [C, H, W], pred int32 [H, W]).

    probs: softmax over queries of logit_scale·logits, max over each class's synonyms, area_thd applied.
    pred: argmax class (first on ties), 0 where the top probability is below prob_thd.
    """
    query_probs = _softmax_over_queries(logits * np.float32(config.logit_scale))
    if vocabulary.num_classes == vocabulary.num_queries:
        probs = query_probs
    else:
        # First query of each class: queries of a class are contiguous, so a max over synonyms is a reduceat.
        class_starts = np.searchsorted(vocabulary.query_class, np.arange(vocabulary.num_classes))
        probs = np.maximum.reduceat(query_probs, class_starts, axis=0)  # [C, H, W]
    if config.area_thd is not None:
        _suppress_small_classes(probs, config.area_thd)
    pred = probs.argmax(axis=0).astype(np.int32)
    pred[probs.max(axis=0) < config.prob_thd] = 0
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
