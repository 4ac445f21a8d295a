"""The stage protocols: what a backend implements so that the Pipeline can compose it.

Stages are stateless: everything an image or a request needs travels in the arguments and the returned
frozen dataclasses (engine/types.py), so one stage object serves several threads at once. Two levels:

- model level, what a runtime provides: `CropEncoder` (SCLIP's image tower on a batch of windows) and
  `TextEncoder` (CLIP's text features of query words);
- stage level, what the Pipeline calls: `DenseStage` (engine/dense_clip.py `SclipStage` builds it from the two
  encoders for every runtime) and `MaskStage` (SAM2: the exported graphs in engine/backends/graph_stages.py,
  the torch reference in clipsam.reference).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from clipsam.engine.dense_clip import DenseConfig, RefineLogits
from clipsam.engine.types import (
    DenseMap,
    ImageEmbedding,
    MaskCandidates,
    PatchFeatures,
    Prompts,
    RegionMap,
    RleCandidates,
    TextFeatures,
)
from clipsam.engine.vocabulary import Vocabulary


class CropEncoder(Protocol):
    """SCLIP's image tower: normalised crops → L2-normalised patch features."""

    patch_size: int
    weights_id: str

    def encode_crops(self, crops: np.ndarray) -> np.ndarray:
        """float32 [N, 3, h, w] CLIP-normalised crops → float32 [N, (h//p)·(w//p), D] patch features."""

    # Optional (the accuracy mode, issue 26): `encode_crops_with_regions(crops, patch_regions int32 [N, L])`,
    # the same features with the last block's attention restricted to each patch's region.


class TextEncoder(Protocol):
    """CLIP's text tower with SCLIP's prompt templates: query words → L2-normalised text features."""

    weights_id: str

    def encode(self, queries: Sequence[str]) -> np.ndarray:
        """Q query words → float32 [Q, D] template-ensembled, L2-normalised features."""


class DenseStage(Protocol):
    """SCLIP: image → patch features (vocabulary-free), then features + text → the dense class map."""

    weights_id: str

    def text(self, vocabulary: Vocabulary) -> TextFeatures: ...

    def features(
        self, image: np.ndarray, config: DenseConfig, regions: RegionMap | None = None
    ) -> PatchFeatures:
        """uint8 [H, W, 3] RGB → the patch features of every window (config's resize and windows); with
        `regions` the last block's attention stays within each patch's region (issue 26)."""

    def dense_map(
        self,
        features: PatchFeatures,
        text: TextFeatures,
        config: DenseConfig,
        refine: RefineLogits | None = None,
    ) -> DenseMap:
        """The dense map in the image frame; `refine` (optional) transforms the query logits first."""


class MaskStage(Protocol):
    """SAM2: the image encoder once per image, then the mask decoder for any number of prompts."""

    model_id: str

    def embed(self, image: np.ndarray) -> ImageEmbedding:
        """uint8 [H, W, 3] RGB → the image embedding (image frame size kept in it)."""

    def decode(self, embedding: ImageEmbedding, prompts: Prompts, use_boxes: bool = False) -> RleCandidates:
        """Each prompt's best mask (of SAM2's 3 multimask outputs, by predicted IoU) as a COCO RLE."""

    def decode_masks(
        self, embedding: ImageEmbedding, prompts: Prompts, use_boxes: bool = False
    ) -> MaskCandidates:
        """`decode` with the masks dense, bool [B, H, W] (for callers that need pixels, e.g. eval's vote)."""
