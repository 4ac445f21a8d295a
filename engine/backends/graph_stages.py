"""The stages on exported graphs, on any runtime's graphs (onnxruntime, OpenVINO, TensorRT). Torch-free.

- `GraphCropEncoder`: SCLIP's image tower graph (a CropEncoder, engine/stages.py).
- `BankTextEncoder`: text features from the artifacts' text bank (a TextEncoder).
- `GraphSam2`: SAM2's encoder and decoder graphs (a MaskStage): ONE decoder call for all prompts.
- `GraphSam2Fast`: the same with the rewritten decoder (export/sam2_fast_decoder.py): after the encoder,
  `sam2_decoder_image` turns the encoder features into the decoder's prompt-independent tensors once per
  image, and `sam2_fast_decoder` takes those instead of the raw features. Same masks.

SAM2's preprocessing and mask upsampling are numpy / numba here (engine/transforms.py, kernels/upsample.py),
equal to what the `sam2` package does in torch. No stage keeps per-image state: the image embedding is
returned to the caller and passed back to `decode`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import MappingProxyType

import numpy as np

from clipsam.engine.backends.base import Backend
from clipsam.engine.errors import ClipsamError
from clipsam.engine.text.bank import TextBank
from clipsam.engine.transforms import preprocess_sam2, sam2_box_points, sam2_point_coords
from clipsam.engine.types import ImageEmbedding, MaskCandidates, Prompts, RleCandidates
from clipsam.kernels.upsample import upsample_masks, upsample_to_rle

_PER_PROMPT_INPUTS = ("point_coords", "point_labels")
_FEATURE_INPUTS = ("image_embed", "high_res_feats_0", "high_res_feats_1")
# Prompts per decoder call: bounds the decoder's activations, which grow linearly with the chunk (chunk sizes
# measured with benchmarks/bench_decoder.py, figures in benchmarks/README.md).
CHUNK_SIZE = 8


def _best_of_multimask(outputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Low-res logits [B, 256, 256] and IoU [B] of the best of mask tokens 1..3 (first index on ties, as
    np.argmax in the reference)."""
    multimask_iou = outputs["iou_predictions"][:, 1:]  # [B, 3]
    best = np.argmax(multimask_iou, axis=1)
    rows = np.arange(best.shape[0])
    return outputs["low_res_masks"][rows, 1 + best], multimask_iou[rows, best]


class GraphCropEncoder:
    """SCLIP's image tower graph: crops float32 [N, 3, S, S] → patch features float32 [N, L, D].

    regions_tower: a loader of the `sclip_tower_regions` graph (issue 26), called once, on the first
    `encode_crops_with_regions`; None when the folder has none (that method is then absent).
    """

    def __init__(
        self,
        tower: Backend,
        weights_id: str,
        patch_size: int,
        regions_tower: Callable[[], Backend] | None = None,
        crop_size: int | None = None,
    ):
        self.tower = tower
        self.crop_size = crop_size  # the graph's fixed crop side (None: not recorded, the graph checks)
        self.weights_id = weights_id
        self.patch_size = patch_size
        self._regions_loader = regions_tower
        self._regions_graph: Backend | None = None
        self._lock = threading.Lock()
        if regions_tower is None:
            self.encode_crops_with_regions = None  # getattr(..., None) callers see no region variant

    def encode_crops(self, crops: np.ndarray) -> np.ndarray:
        """All crops in one graph call."""
        self._check_crops(crops)
        return self.tower.run({"crops": np.ascontiguousarray(crops, dtype=np.float32)})["patch_features"]

    def _check_crops(self, crops: np.ndarray) -> None:
        side = self.crop_size
        if side is not None and tuple(crops.shape[-2:]) != (side, side):
            raise ClipsamError(
                f"this SCLIP tower takes {side}×{side} crops (fixed at export), not "
                f"{crops.shape[-2]}×{crops.shape[-1]}: keep --slide-crop {side}, or use --backend torch"
            )

    def encode_crops_with_regions(self, crops: np.ndarray, patch_regions: np.ndarray) -> np.ndarray:
        """crops float32 [N, 3, S, S] and each patch's region id int32 [N, L] → features float32 [N, L, D]
        with the last block's attention restricted to regions, in one call of the region graph."""
        self._check_crops(crops)
        with self._lock:
            if self._regions_graph is None:
                self._regions_graph = self._regions_loader()
        feeds = {
            "crops": np.ascontiguousarray(crops, dtype=np.float32),
            "patch_regions": np.ascontiguousarray(patch_regions, dtype=np.int32),
        }
        return self._regions_graph.run(feeds)["patch_features"]


class BankTextEncoder:
    """Text features stored with the artifacts (`clipsam export --vocabulary`, `clipsam export-text`)."""

    def __init__(self, text_bank: TextBank, weights_id: str, export_hint: str):
        self.text_bank = text_bank
        self.weights_id = weights_id
        self._export_hint = export_hint

    def encode(self, queries: Sequence[str]) -> np.ndarray:
        """float32 [Q, D]; a ClipsamError names the queries the bank lacks."""
        return self.text_bank.get(self.weights_id, list(queries), self._missing)

    def _missing(self, queries: list[str]) -> np.ndarray:
        listed = ", ".join(f"'{q}'" for q in queries[:5]) + (" …" if len(queries) > 5 else "")
        raise ClipsamError(f"the artifacts hold no text features for {listed}: {self._export_hint}")


class GraphSam2:
    """SAM2 encoder + decoder graphs behind the MaskStage protocol: ONE decoder call for all prompts.

    model_id: names the model, weights and decoder form; embeddings carry it and `decode` checks it.
    `workers`: optional single-threaded instances of the decoder graph; when given, a call of several chunks
    deals the chunks out to them, one thread each (prompt parallelism instead of intra-op threads: each
    prompt's activations stay in one core's cache and no op waits for a thread barrier; figures in
    benchmarks/README.md). `decoder` serves single-chunk calls with all its threads.
    """

    def __init__(
        self,
        encoder: Backend,
        decoder: Backend,
        *,
        model_id: str,
        chunk_size: int = CHUNK_SIZE,
        workers: Sequence[Backend] = (),
    ):
        self.encoder = encoder
        self.decoder = decoder
        self.model_id = model_id
        self.chunk_size = chunk_size
        self.workers = tuple(workers)

    def embed(self, image: np.ndarray) -> ImageEmbedding:
        """Run the encoder once: uint8 [H, W, 3] RGB → the decoder's image inputs."""
        features = self.encoder.run({"image": preprocess_sam2(image)})
        arrays = self._image_arrays({name: features[name] for name in _FEATURE_INPUTS})
        return ImageEmbedding(
            arrays=MappingProxyType(arrays),
            image_hw=(int(image.shape[0]), int(image.shape[1])),
            model=self.model_id,
        )

    def decode(self, embedding: ImageEmbedding, prompts: Prompts, use_boxes: bool = False) -> RleCandidates:
        """All prompts through the decoder; per chunk, the best of mask tokens 1..3 by predicted IoU at low
        resolution, and each kept mask upsampled (bilinear, align_corners=False, > 0) straight into a COCO
        RLE in the image frame (kernels.upsample.upsample_to_rle). Streamed: only the chunks in flight hold
        low-resolution logits, so the peak memory does not grow with the prompt count (only the RLEs do)."""
        self._check(embedding)
        if len(prompts) == 0:
            return RleCandidates.empty()
        height, width = embedding.image_hw
        rles: list = [None] * len(prompts)

        def keep(rows: slice, low_res: np.ndarray) -> None:
            rles[rows] = upsample_to_rle(low_res, height, width)

        iou = self._decode_chunks(embedding, prompts, use_boxes, keep)
        return RleCandidates(rles=rles, **_scored(prompts, iou))

    def decode_masks(
        self, embedding: ImageEmbedding, prompts: Prompts, use_boxes: bool = False
    ) -> MaskCandidates:
        """`decode` with the kept masks dense: bool [B, H, W] in the image frame."""
        self._check(embedding)
        height, width = embedding.image_hw
        if len(prompts) == 0:
            return MaskCandidates.empty(height, width)
        masks = np.empty((len(prompts), height, width), dtype=bool)

        def keep(rows: slice, low_res: np.ndarray) -> None:
            masks[rows] = upsample_masks(low_res, height, width)

        iou = self._decode_chunks(embedding, prompts, use_boxes, keep)
        return MaskCandidates(masks=masks, **_scored(prompts, iou))

    def _image_arrays(self, features: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The decoder's image inputs from the encoder's three feature maps (the faithful decoder: as is)."""
        return features

    def _check(self, embedding: ImageEmbedding) -> None:
        if embedding.model != self.model_id:
            raise ClipsamError(
                f"this image embedding was made by '{embedding.model}', not by this SAM2 stage "
                f"('{self.model_id}'): embed the image with the stage that decodes it"
            )

    def _decode_chunks(
        self,
        embedding: ImageEmbedding,
        prompts: Prompts,
        use_boxes: bool,
        keep: Callable[[slice, np.ndarray], None],
    ) -> np.ndarray:
        """Run the decoder in chunks of `chunk_size` prompts (dealt out to the workers when there are several
        chunks); `keep(rows, low_res)` receives each chunk's best-of-3 low-res logits float32 [b, 256, 256]
        as soon as it is decoded. Returns the predicted IoU float32 [B] of each prompt's kept mask."""
        feeds = {**embedding.arrays, **prompt_feeds(prompts, use_boxes, embedding.image_hw)}
        iou = np.empty(len(prompts), np.float32)
        chunks = [slice(start, start + self.chunk_size) for start in range(0, len(prompts), self.chunk_size)]

        def decode(decoder: Backend, mine: list[slice]) -> None:
            for rows in mine:  # each worker writes only its own rows
                chunk = {k: v[rows] if k in _PER_PROMPT_INPUTS else v for k, v in feeds.items()}
                count = chunk["point_labels"].shape[0]
                chunk["mask_input"] = np.zeros((count, 1, 256, 256), np.float32)  # no mask prompts here
                chunk["has_mask_input"] = np.zeros(count, np.float32)
                low_res, iou[rows] = _best_of_multimask(decoder.run(chunk))
                keep(rows, low_res)

        workers = min(len(self.workers), len(chunks))
        if workers < 2:
            decode(self.decoder, chunks)
        else:
            with ThreadPoolExecutor(workers) as pool:  # the runtimes and the kernels release the GIL
                jobs = [pool.submit(decode, self.workers[i], chunks[i::workers]) for i in range(workers)]
                for job in jobs:
                    job.result()
        return iou


class GraphSam2Fast(GraphSam2):
    """SAM2 through the encoder, the per-image decoder graph and the fast decoder graph (a MaskStage).

    image_graph: image_embed [1, 256, 64, 64], high_res_feats_0 [1, 32, 256, 256], high_res_feats_1
    [1, 64, 128, 128] → the per-image decoder tensors (image_src, layer0_keys, layer0_values, layer0_queries,
    high_res_s1, high_res_s0); decoder: those + point_coords [B, P, 2], point_labels int32 [B, P], mask_input
    [B, 1, 256, 256], has_mask_input [B] → low_res_masks [B, 4, 256, 256], iou_predictions [B, 4],
    object_score_logits [B, 1].
    """

    def __init__(self, encoder: Backend, image_graph: Backend, decoder: Backend, **options):
        super().__init__(encoder, decoder, **options)
        self.image_graph = image_graph

    def _image_arrays(self, features: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.image_graph.run(features)


def _scored(prompts: Prompts, iou: np.ndarray) -> dict[str, np.ndarray]:
    """The candidates' iou, class ids (the prompts') and merge scores (prompt score × predicted IoU)."""
    return {
        "iou": iou,
        "class_ids": prompts.class_ids.astype(np.int32),
        "scores": (prompts.scores * iou).astype(np.float32),
    }


def prompt_feeds(prompts: Prompts, use_boxes: bool, image_hw: tuple[int, int]) -> dict[str, np.ndarray]:
    """point_coords float32 [B, P, 2] in the 1024 frame and point_labels int32 [B, P]; with use_boxes each
    prompt's box corners go first (labels 2, 3)."""
    height, width = image_hw
    coords = sam2_point_coords(prompts.coords, height, width)
    labels = prompts.labels.astype(np.int32)
    if use_boxes:
        box_coords, box_labels = sam2_box_points(prompts.boxes, height, width)
        coords = np.concatenate([box_coords, coords], axis=1)
        labels = np.concatenate([box_labels.astype(np.int32), labels], axis=1)
    return {
        "point_coords": np.ascontiguousarray(coords, dtype=np.float32),
        "point_labels": np.ascontiguousarray(labels, dtype=np.int32),
    }
