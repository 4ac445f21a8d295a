"""Stage boundaries of the pipeline. Every array's shape, dtype and coordinate frame is stated here.

Frames:
- "image": pixel coordinates of the original (EXIF-oriented) RGB image, x to the right, y down, H×W.
- "sam": the SAM2 input frame, the image squashed to 1024×1024 (x·1024/W, y·1024/H).
- "network": SCLIP's input frame, the image resized so its short side is the config's short_side.

The encoders' outputs (PatchFeatures, ImageEmbedding) depend on the image only, never on the vocabulary or the
prompts: a caller may keep them and reuse them (a server's image cache does).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from clipsam.engine.vocabulary import Vocabulary


@dataclass(frozen=True)
class TextFeatures:
    """CLIP text features of a vocabulary's queries.

    features: float32 [Q, D], L2-normalised, one row per `vocabulary.queries` entry (same order).
    weights: id of the CLIP weights that made them (features of other weights are not comparable).
    """

    vocabulary: Vocabulary
    features: np.ndarray
    weights: str


@dataclass(frozen=True)
class WindowGeometry:
    """How SCLIP cuts an image into windows: resize to `short_side` (0 = none; long side ≤ long_cap), then
    crop × crop windows every `stride` network pixels."""

    short_side: int
    crop: int
    stride: int
    long_cap: int


@dataclass(frozen=True)
class PatchFeatures:
    """SCLIP's image tower output for one image: every sliding window's patch features.

    features: float32 [N, L, D], L2-normalised, L = (h // p)·(w // p) patches of each h×w window, row-major.
    windows: N (y0, y1, x0, x1) windows in the network frame, row-major (as `slide_windows` gives them).
    network_hw: the network frame's size; image_hw: the image frame's size (H, W).
    geometry: the resize and windows that made them; patch_size: p; weights: id of the CLIP weights.
    regions: "" for SCLIP's plain last block, else the RegionMap key whose regions restricted its attention.
    """

    features: np.ndarray
    windows: tuple[tuple[int, int, int, int], ...]
    network_hw: tuple[int, int]
    image_hw: tuple[int, int]
    geometry: WindowGeometry
    patch_size: int
    weights: str
    regions: str = ""

    @property
    def nbytes(self) -> int:
        return int(self.features.nbytes)


@dataclass(frozen=True)
class ImageEmbedding:
    """SAM2's image encoder output for one image: what the mask decoder needs of the image.

    arrays: the decoder's image inputs by name (float32; for the exported graphs image_embed
        [1, 256, 64, 64], high_res_feats_0 [1, 32, 256, 256], high_res_feats_1 [1, 64, 128, 128], or the
        fast decoder's per-image tensors); read-only by convention.
    image_hw: the image frame's size (H, W); prompts are mapped from it to the 1024 frame.
    model: which mask stage made it (model, weights, decoder form); a stage refuses another's embedding.
    """

    arrays: Mapping[str, np.ndarray]
    image_hw: tuple[int, int]
    model: str

    @property
    def nbytes(self) -> int:
        return int(sum(array.nbytes for array in self.arrays.values()))


@dataclass(frozen=True)
class RegionMap:
    """SAM2's class-agnostic regions of one image (issue 26's accuracy mode: engine/regions.py).

    labels: int32 [H, W] image frame; 0 = a pixel in no kept mask, r = 1..R the r-th mask painted (masks are
        painted in ascending area order, so a larger mask overwrites a smaller one; a region may be covered
        entirely and have no pixel left).
    iou: float32 [R], SAM2's predicted IoU of region r's mask at index r - 1.
    settings: how they were made, as the JSON's models.regions records it (source, points per side,
        thresholds); `key` names them in one string.
    """

    labels: np.ndarray
    iou: np.ndarray
    settings: Mapping[str, object]

    @property
    def count(self) -> int:
        """R, the number of regions painted."""
        return int(self.iou.shape[0])

    @property
    def key(self) -> str:
        return ",".join(f"{name}={value}" for name, value in self.settings.items())


@dataclass(frozen=True)
class DenseMap:
    """SCLIP's dense class probabilities at original image resolution.

    probs: float32 [C, H, W], per class (after the max over synonyms and area_thd), image frame.
    pred: int32 [H, W], argmax class after prob_thd (pixels below it become class 0).
    class_names: C names; index 0 is the background class when the vocabulary has one.
    """

    probs: np.ndarray
    pred: np.ndarray
    class_names: tuple[str, ...]

    @property
    def top_prob(self) -> np.ndarray:
        """float32 [H, W]: the highest class probability per pixel."""
        return self.probs.max(axis=0)


@dataclass(frozen=True)
class Prompts:
    """One SAM2 prompt per confident connected region of the dense map.

    coords: float32 [B, P, 2] (x, y) in the image frame (P = 1: one positive point per region).
    labels: int32 [B, P], 1 = positive point.
    class_ids: int32 [B], class of the region in DenseMap.class_names.
    scores: float32 [B], the region's mean top-class probability (the confidence used to filter).
    boxes: float32 [B, 4] (x0, y0, x1, y1) in the image frame, the region's bounding box (inclusive pixel
        edges: x1 = max x + 1).
    areas: int64 [B], region size in image pixels.
    """

    coords: np.ndarray
    labels: np.ndarray
    class_ids: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray
    areas: np.ndarray

    def __len__(self) -> int:
        return int(self.class_ids.shape[0])

    @staticmethod
    def empty() -> Prompts:
        return Prompts(
            coords=np.zeros((0, 1, 2), np.float32),
            labels=np.zeros((0, 1), np.int32),
            class_ids=np.zeros(0, np.int32),
            scores=np.zeros(0, np.float32),
            boxes=np.zeros((0, 4), np.float32),
            areas=np.zeros(0, np.int64),
        )


@dataclass(frozen=True)
class MaskCandidates:
    """The kept SAM2 mask of each prompt, at image resolution.

    masks: bool [B, H, W], image frame.
    iou: float32 [B], SAM2's predicted IoU of the kept mask.
    class_ids: int32 [B], copied from the prompts.
    scores: float32 [B], confidence used by the merge: prompt score × predicted IoU.
    """

    masks: np.ndarray
    iou: np.ndarray
    class_ids: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return int(self.class_ids.shape[0])

    @staticmethod
    def empty(height: int, width: int) -> MaskCandidates:
        return MaskCandidates(
            masks=np.zeros((0, height, width), dtype=bool),
            iou=np.zeros(0, np.float32),
            class_ids=np.zeros(0, np.int32),
            scores=np.zeros(0, np.float32),
        )


@dataclass(frozen=True)
class RleCandidates:
    """MaskCandidates with each mask as a COCO RLE, never dense (B masks at 1080p would be 2 MB each).

    rles: B dicts {"size": [H, W], "counts": bytes} (compressed, column-major), image frame.
    iou, class_ids, scores: as in MaskCandidates.
    """

    rles: list
    iou: np.ndarray
    class_ids: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return int(self.class_ids.shape[0])

    @staticmethod
    def empty() -> RleCandidates:
        none = np.zeros(0, np.float32)
        return RleCandidates(rles=[], iou=none, class_ids=np.zeros(0, np.int32), scores=none)


@dataclass(frozen=True)
class Segment:
    """One output instance.

    bbox_xywh: [x, y, w, h] in image pixels, as pycocotools' toBbox of `rle`.
    rle: COCO compressed RLE {"size": [H, W], "counts": str}.
    """

    class_id: int
    class_name: str
    score: float
    bbox_xywh: tuple[float, float, float, float]
    area: int
    rle: dict


# The merge's output: the kept instances, best first.
Segments = tuple[Segment, ...]


@dataclass(frozen=True)
class SegmentationResult:
    """What a segment run produces for one image.

    timings_ms: wall time per stage in milliseconds, in run order, and their sum "total".
    counts: {"prompts": prompts given to SAM2, "segments": len(segments)}.
    """

    height: int
    width: int
    class_names: tuple[str, ...]
    segments: tuple[Segment, ...]
    random_weights: bool
    models: dict = field(default_factory=dict)
    timings_ms: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)
