"""The pure PyTorch SAM2 reference: one `SAM2ImagePredictor.predict` call per prompt, as the seed does.

Every faster SAM2 path is measured against this loop, so it adds nothing of its own to sam2's numbers: the
only decisions taken here are which of the three multimask outputs to keep (highest predicted IoU) and the
score.
"""

from __future__ import annotations

import threading
import warnings
from types import MappingProxyType
from typing import TYPE_CHECKING

import numpy as np
import torch

from clipsam.engine.types import ImageEmbedding, MaskCandidates, Prompts, RleCandidates
from clipsam.kernels import rle as rle_codec

if TYPE_CHECKING:
    from clipsam.export.sam2_model import Sam2Model


class Sam2Reference:
    """SAM2 through the `sam2` package's own image predictor, one prompt at a time (a MaskStage).

    sam2's predictor keeps the image it was given; here `embed` returns the features and `decode` loads them
    back under a lock, so the stage is stateless to its callers (and serialised: it is the reference).
    """

    def __init__(self, model: Sam2Model) -> None:
        # Imported here: `import sam2` initialises Hydra's global state.
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        self.model = model
        with warnings.catch_warnings():
            # sam2's transforms call torch.jit.script, deprecated in torch 2.14: noise on every construction.
            warnings.filterwarnings(
                "ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning
            )
            self._predictor = SAM2ImagePredictor(model.module)
        self.model_id = f"{model.name}:{model.weights_id}:sam2-predictor"
        self._lock = threading.Lock()

    def embed(self, image_u8: np.ndarray) -> ImageEmbedding:
        """Run sam2's image encoder once: uint8 [H, W, 3] RGB, image frame (sam2 squashes it to 1024×1024).

        The embedding holds the predictor's features as numpy float32 arrays: image_embed [1, 256, 64, 64],
        high_res_feats_0 [1, 32, 256, 256], high_res_feats_1 [1, 64, 128, 128].
        """
        if image_u8.dtype != np.uint8 or image_u8.ndim != 3 or image_u8.shape[2] != 3:
            raise ValueError(f"expected a uint8 [H, W, 3] RGB image, got {image_u8.dtype} {image_u8.shape}")
        with self._lock, torch.inference_mode():
            self._predictor.set_image(image_u8)
            features = self._predictor._features
            arrays = {
                "image_embed": features["image_embed"].float().cpu().numpy(),
                **{
                    f"high_res_feats_{level}": feats.float().cpu().numpy()
                    for level, feats in enumerate(features["high_res_feats"])
                },
            }
        return ImageEmbedding(
            arrays=MappingProxyType(arrays), image_hw=image_u8.shape[:2], model=self.model_id
        )

    def decode(self, embedding: ImageEmbedding, prompts: Prompts, use_boxes: bool = False) -> RleCandidates:
        """`decode_masks` with each mask encoded as a COCO RLE (the RLE kernels, column-major)."""
        candidates = self.decode_masks(embedding, prompts, use_boxes)
        rles = rle_codec.encode_batch(candidates.masks) if len(candidates) else []
        return RleCandidates(
            rles=rles, iou=candidates.iou, class_ids=candidates.class_ids, scores=candidates.scores
        )

    def decode_masks(
        self, embedding: ImageEmbedding, prompts: Prompts, use_boxes: bool = False
    ) -> MaskCandidates:
        """One multimask SAM2 prediction per prompt; keep the mask with the highest predicted IoU.

        prompts.coords [B, P, 2] (x, y) and prompts.boxes [B, 4] (x0, y0, x1, y1) are in the image frame,
        which is what SAM2ImagePredictor expects (it rescales to its 1024 frame itself). With use_boxes the
        region's box goes in beside its point(s).
        Returns masks bool [B, H, W] (image frame, sam2's logits > 0 after its bilinear upsampling), iou
        float32 [B] (predicted IoU of the kept mask) and scores float32 [B] = prompts.scores × iou, so a
        confident region with an unsure mask ranks below a confident region with a sure mask.
        Ties between the three predicted IoUs keep the lowest mask index.
        """
        if embedding.model != self.model_id:
            raise ValueError(f"embedding of '{embedding.model}' given to the reference '{self.model_id}'")
        height, width = embedding.image_hw
        count = len(prompts)
        masks = np.zeros((count, height, width), dtype=bool)
        iou = np.zeros(count, dtype=np.float32)
        with self._lock:  # sam2's predictor holds one image: the embedding is loaded back into it
            self._load(embedding)
            for i in range(count):
                box = prompts.boxes[i] if use_boxes else None
                masks[i], iou[i] = self._predict_one(prompts.coords[i], prompts.labels[i], box)
        scores = (prompts.scores.astype(np.float32) * iou).astype(np.float32)
        class_ids = prompts.class_ids.astype(np.int32)
        return MaskCandidates(masks=masks, iou=iou, class_ids=class_ids, scores=scores)

    def _load(self, embedding: ImageEmbedding) -> None:
        """Put the embedding's features back into sam2's predictor (what its set_image leaves there)."""
        device = self._predictor.device
        arrays = embedding.arrays
        self._predictor._features = {
            "image_embed": torch.from_numpy(arrays["image_embed"]).to(device),
            "high_res_feats": [
                torch.from_numpy(arrays[f"high_res_feats_{level}"]).to(device) for level in (0, 1)
            ],
        }
        self._predictor._orig_hw = [tuple(embedding.image_hw)]
        self._predictor._is_image_set = True
        self._predictor._is_batch = False

    def _predict_one(
        self, coords: np.ndarray, labels: np.ndarray, box: np.ndarray | None
    ) -> tuple[np.ndarray, np.float32]:
        """coords float32 [P, 2], labels int32 [P], box float32 [4] or None (image frame).

        Returns the kept mask bool [H, W] and its predicted IoU.
        """
        with torch.inference_mode():
            masks, iou_predictions, _ = self._predictor.predict(
                point_coords=coords, point_labels=labels, box=box, multimask_output=True
            )
        # masks: float32 [3, H, W] holding 0/1; iou_predictions: float32 [3].
        best = int(np.argmax(iou_predictions))
        return masks[best] > 0.5, np.float32(iou_predictions[best])
