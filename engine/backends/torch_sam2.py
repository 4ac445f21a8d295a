"""The pure PyTorch SAM2 reference: one `SAM2ImagePredictor.predict` call per prompt, as the seed does.

Every faster SAM2 path is measured against this loop, so it adds nothing of its own to sam2's numbers: the
only decisions taken here are which of the three multimask outputs to keep (highest predicted IoU) and the
score.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np
import torch

from clipsam.engine.types import MaskCandidates, Prompts

if TYPE_CHECKING:
    from clipsam.export.sam2_model import Sam2Model


class Sam2Reference:
    """SAM2 through the `sam2` package's own image predictor, one prompt at a time."""

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
        self._image_hw: tuple[int, int] | None = None

    def set_image(self, image_u8: np.ndarray) -> None:
        """Run the image encoder once for the image.

        image_u8: uint8 [H, W, 3] RGB, image frame (sam2 squashes it to 1024×1024 itself).
        """
        if image_u8.dtype != np.uint8 or image_u8.ndim != 3 or image_u8.shape[2] != 3:
            raise ValueError(f"expected a uint8 [H, W, 3] RGB image, got {image_u8.dtype} {image_u8.shape}")
        with torch.inference_mode():
            self._predictor.set_image(image_u8)
        self._image_hw = (int(image_u8.shape[0]), int(image_u8.shape[1]))

    def predict(self, prompts: Prompts, use_boxes: bool = False) -> MaskCandidates:
        """One multimask SAM2 prediction per prompt; keep the mask with the highest predicted IoU.

        prompts.coords [B, P, 2] (x, y) and prompts.boxes [B, 4] (x0, y0, x1, y1) are in the image frame,
        which is what SAM2ImagePredictor expects (it rescales to its 1024 frame itself). With use_boxes the
        region's box goes in beside its point(s).
        Returns masks bool [B, H, W] (image frame, sam2's logits > 0 after its bilinear upsampling), iou
        float32 [B] (predicted IoU of the kept mask) and scores float32 [B] = prompts.scores × iou, so a
        confident region with an unsure mask ranks below a confident region with a sure mask.
        Ties between the three predicted IoUs keep the lowest mask index.
        """
        if self._image_hw is None:
            raise RuntimeError("call set_image before predict")
        height, width = self._image_hw
        count = len(prompts)
        masks = np.zeros((count, height, width), dtype=bool)
        iou = np.zeros(count, dtype=np.float32)
        for i in range(count):
            box = prompts.boxes[i] if use_boxes else None
            masks[i], iou[i] = self._predict_one(prompts.coords[i], prompts.labels[i], box)
        scores = (prompts.scores.astype(np.float32) * iou).astype(np.float32)
        class_ids = prompts.class_ids.astype(np.int32)
        return MaskCandidates(masks=masks, iou=iou, class_ids=class_ids, scores=scores)

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
