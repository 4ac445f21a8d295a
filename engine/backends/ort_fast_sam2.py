"""SAM2 on the rewritten decoder (export/sam2_fast_decoder.py): encoder, per-image graph, fast decoder.

Same API and the same masks as `GraphSam2` (engine/backends/ort_stages.py), which it extends: only what the
decoder is fed changes. After the encoder, `sam2_decoder_image.onnx` runs once per image and turns the
encoder features into the decoder's prompt-independent tensors (`image_src`, `layer0_keys`, `layer0_values`,
`layer0_queries`, `high_res_s1`, `high_res_s0`); `sam2_fast_decoder.onnx` takes those instead of the raw
features, plus the faithful decoder's prompt inputs, and returns the faithful decoder's outputs. Torch-free.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from clipsam.engine.backends.base import Backend
from clipsam.engine.backends.ort_stages import GraphSam2

_FEATURE_INPUTS = ("image_embed", "high_res_feats_0", "high_res_feats_1")
# Prompts per decoder call: the same memory bound as GraphSam2 (activations grow linearly with the chunk;
# chunk sizes measured with benchmarks/bench_decoder.py, figures in benchmarks/README.md).
FAST_CHUNK_SIZE = 8


class GraphSam2Fast(GraphSam2):
    """SAM2 through the encoder, the per-image decoder graph and the fast decoder graph (MaskBackend).

    encoder: image → image_embed [1, 256, 64, 64], high_res_feats_0 [1, 32, 256, 256], high_res_feats_1
    [1, 64, 128, 128]; image_graph: those three → the per-image decoder tensors; decoder: the per-image
    tensors + point_coords [B, P, 2], point_labels int32 [B, P], mask_input [B, 1, 256, 256],
    has_mask_input [B] → low_res_masks [B, 4, 256, 256], iou_predictions [B, 4], object_score_logits [B, 1].
    """

    def __init__(
        self,
        encoder: Backend,
        image_graph: Backend,
        decoder: Backend,
        chunk_size: int = FAST_CHUNK_SIZE,
        workers: Sequence[Backend] = (),
    ):
        super().__init__(encoder, decoder, chunk_size=chunk_size, workers=workers)
        self.image_graph = image_graph
        self._image_tensors: dict[str, np.ndarray] | None = None

    def set_image(self, image_u8: np.ndarray) -> None:
        """Encoder, then the per-image decoder graph: uint8 [H, W, 3] RGB → the decoder's image tensors."""
        super().set_image(image_u8)
        features = {name: self._features[name] for name in _FEATURE_INPUTS}
        self._image_tensors = self.image_graph.run(features)

    def _decoder_feeds(self, prompts, use_boxes: bool) -> dict[str, np.ndarray]:
        """The faithful feeds with the raw encoder features swapped for the per-image decoder tensors."""
        feeds = super()._decoder_feeds(prompts, use_boxes)
        for name in _FEATURE_INPUTS:
            del feeds[name]
        return {**self._image_tensors, **feeds}
