"""SCLIP and SAM2 stages on exported graphs, on any Backend (onnxruntime, OpenVINO, TensorRT). Torch-free.

SAM2's preprocessing and mask upsampling are numpy / numba here (engine/sam2_transforms.py,
kernels/upsample.py), equal to what the `sam2` package does in torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from clipsam.engine.backends.base import Backend
from clipsam.engine.errors import ClipsamError
from clipsam.engine.sam2_transforms import preprocess_sam2, sam2_box_points, sam2_point_coords
from clipsam.engine.text_bank import TextBank
from clipsam.engine.types import MaskCandidates, Prompts, RleCandidates
from clipsam.kernels.upsample import upsample_masks, upsample_to_rle

_PER_PROMPT_INPUTS = ("point_coords", "point_labels")
RLE_BATCH = 64  # masks per upsample_to_rle call


def _best_of_multimask(outputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Low-res logits [B, 256, 256] and IoU [B] of the best of mask tokens 1..3 (first index on ties, as
    np.argmax in the reference)."""
    multimask_iou = outputs["iou_predictions"][:, 1:]  # [B, 3]
    best = np.argmax(multimask_iou, axis=1)
    rows = np.arange(best.shape[0])
    return outputs["low_res_masks"][rows, 1 + best], multimask_iou[rows, best]


class GraphSclip:
    """SCLIP's image tower graph behind the DenseBackend protocol; text features from the artifacts' bank."""

    def __init__(
        self, tower: Backend, text_bank: TextBank, weights_id: str, patch_size: int, export_hint: str
    ):
        self.tower = tower
        self.text_bank = text_bank
        self.weights_id = weights_id
        self.patch_size = patch_size
        self._export_hint = export_hint

    def encode_crops(self, crops: np.ndarray) -> np.ndarray:
        """float32 [N, 3, S, S] normalised crops → float32 [N, L, D] normalised patch features, one call."""
        return self.tower.run({"crops": np.ascontiguousarray(crops, dtype=np.float32)})["patch_features"]

    def encode_queries(self, queries: Sequence[str]) -> np.ndarray:
        """float32 [Q, D] from the text features stored with the artifacts."""
        return self.text_bank.get(self.weights_id, list(queries), self._missing)

    def _missing(self, queries: list[str]) -> np.ndarray:
        listed = ", ".join(f"'{q}'" for q in queries[:5]) + (" …" if len(queries) > 5 else "")
        raise ClipsamError(f"the artifacts hold no text features for {listed}: {self._export_hint}")


class GraphSam2:
    """SAM2 encoder + decoder graphs behind the MaskBackend protocol: ONE decoder call for all prompts.

    `workers`: optional single-threaded instances of the decoder graph; when given, a call of several chunks
    deals the chunks out to them, one thread each (prompt parallelism instead of intra-op threads: each
    prompt's activations stay in one core's cache and no op waits for a thread barrier; figures in
    benchmarks/README.md). `decoder` serves single-chunk calls with all its threads.
    """

    def __init__(
        self,
        encoder: Backend,
        decoder: Backend,
        chunk_size: int = 8,
        workers: Sequence[Backend] = (),
    ):
        self.encoder = encoder
        self.decoder = decoder
        self.workers = list(workers)
        # Prompts per decoder call: bounds the decoder's activations, which grow linearly with the chunk.
        self.chunk_size = chunk_size
        self._features: dict[str, np.ndarray] | None = None
        self._image_hw: tuple[int, int] | None = None

    def set_image(self, image_u8: np.ndarray) -> None:
        """Run the encoder once: uint8 [H, W, 3] RGB → image_embed and the two high-resolution levels."""
        self._features = self.encoder.run({"image": preprocess_sam2(image_u8)})
        self._image_hw = (int(image_u8.shape[0]), int(image_u8.shape[1]))

    def predict(self, prompts: Prompts, use_boxes: bool = False) -> MaskCandidates:
        """All prompts in one decoder call; best of mask tokens 1..3 by predicted IoU at low resolution, then
        only the kept masks are upsampled (bilinear, align_corners=False, > 0) to the image frame."""
        height, width = self._check_image()
        if len(prompts) == 0:
            return MaskCandidates.empty(height, width)
        low_res, iou = self._decode(prompts, use_boxes)
        return MaskCandidates(
            masks=upsample_masks(low_res, height, width),
            iou=iou,
            class_ids=prompts.class_ids.astype(np.int32),
            scores=(prompts.scores * iou).astype(np.float32),
        )

    def predict_rles(self, prompts: Prompts, use_boxes: bool = False) -> RleCandidates:
        """`predict` with each mask upsampled straight into a COCO RLE (kernels.upsample.upsample_to_rle):
        the same masks, never held dense, so memory does not grow with prompts × image size."""
        height, width = self._check_image()
        if len(prompts) == 0:
            none = np.zeros(0, np.float32)
            return RleCandidates(rles=[], iou=none, class_ids=np.zeros(0, np.int32), scores=none)
        low_res, iou = self._decode(prompts, use_boxes)
        rles = [  # in batches: the run-count scratch of one call grows with its masks' runs
            rle
            for start in range(0, len(prompts), RLE_BATCH)
            for rle in upsample_to_rle(low_res[start : start + RLE_BATCH], height, width)
        ]
        return RleCandidates(
            rles=rles,
            iou=iou,
            class_ids=prompts.class_ids.astype(np.int32),
            scores=(prompts.scores * iou).astype(np.float32),
        )

    def _check_image(self) -> tuple[int, int]:
        if self._features is None or self._image_hw is None:
            raise RuntimeError("call set_image before predict")
        return self._image_hw

    def _decode(self, prompts: Prompts, use_boxes: bool) -> tuple[np.ndarray, np.ndarray]:
        """Low-res logits float32 [B, 256, 256] and predicted IoU [B] of each prompt's best multimask token,
        in chunks of `chunk_size` (dealt out to the workers when there are several chunks)."""
        feeds = self._decoder_feeds(prompts, use_boxes)
        low_res = np.empty((len(prompts), 256, 256), np.float32)
        iou = np.empty(len(prompts), np.float32)
        chunks = [slice(start, start + self.chunk_size) for start in range(0, len(prompts), self.chunk_size)]

        def decode(decoder: Backend, mine: list[slice]) -> None:
            for rows in mine:  # each worker writes only its own rows of low_res and iou
                chunk = {k: v[rows] if k in _PER_PROMPT_INPUTS else v for k, v in feeds.items()}
                count = chunk["point_labels"].shape[0]
                chunk["mask_input"] = np.zeros((count, 1, 256, 256), np.float32)  # no mask prompts here
                chunk["has_mask_input"] = np.zeros(count, np.float32)
                low_res[rows], iou[rows] = _best_of_multimask(decoder.run(chunk))

        workers = min(len(self.workers), len(chunks))
        if workers < 2:
            decode(self.decoder, chunks)
        else:
            with ThreadPoolExecutor(workers) as pool:  # onnxruntime releases the GIL while it runs
                jobs = [pool.submit(decode, self.workers[i], chunks[i::workers]) for i in range(workers)]
                for job in jobs:
                    job.result()
        return low_res, iou

    def _decoder_feeds(self, prompts: Prompts, use_boxes: bool) -> dict[str, np.ndarray]:
        height, width = self._image_hw
        coords = sam2_point_coords(prompts.coords, height, width)
        labels = prompts.labels.astype(np.int32)
        if use_boxes:
            box_coords, box_labels = sam2_box_points(prompts.boxes, height, width)
            coords = np.concatenate([box_coords, coords], axis=1)
            labels = np.concatenate([box_labels.astype(np.int32), labels], axis=1)
        return {
            "image_embed": self._features["image_embed"],
            "high_res_feats_0": self._features["high_res_feats_0"],
            "high_res_feats_1": self._features["high_res_feats_1"],
            "point_coords": np.ascontiguousarray(coords, dtype=np.float32),
            "point_labels": np.ascontiguousarray(labels, dtype=np.int32),
        }
