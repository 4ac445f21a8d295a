"""The mask path streams: decoding B prompts holds the low-resolution logits of the chunks in flight only,
so the peak memory does not grow with B (issue 17). numpy reports its buffers to tracemalloc, so the peak
of every array the stage allocates is measured exactly, whatever the machine's speed."""

from __future__ import annotations

import tracemalloc

import numpy as np

from clipsam.engine.backends.graph_stages import GraphSam2
from clipsam.engine.prompts import grid_prompts
from clipsam.engine.types import ImageEmbedding

LOW_RES_BYTES = 256 * 256 * 4  # one prompt's kept low-resolution logits, float32
HEIGHT, WIDTH = 270, 480


class BlobDecoder:
    """A decoder stand-in: each prompt's 4 mask logits are one smooth blob around its point (compact RLEs),
    predicted IoUs from the point; shapes as the exported decoder's outputs."""

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        points = feeds["point_coords"][:, 0, :] / 4.0  # [b, 2] in the 256 frame
        grid = np.arange(256, dtype=np.float32)
        dx = (grid[None, None, :] - points[:, 0, None, None]) ** 2
        dy = (grid[None, :, None] - points[:, 1, None, None]) ** 2
        blob = 1.0 - (dx + dy) / 400.0  # [b, 256, 256]
        low_res = np.stack([blob, blob - 0.2, blob + 0.1, blob - 0.5], axis=1).astype(np.float32)
        iou = np.tile(np.array([0.5, 0.7, 0.9, 0.6], np.float32), (points.shape[0], 1))
        return {"low_res_masks": low_res, "iou_predictions": iou}


def _stage() -> tuple[GraphSam2, ImageEmbedding]:
    stage = GraphSam2(encoder=None, decoder=BlobDecoder(), model_id="blob", chunk_size=8)
    arrays = {"image_embed": np.zeros((1, 1, 1, 1), np.float32)}
    return stage, ImageEmbedding(arrays, (HEIGHT, WIDTH), "blob")


def _peak_bytes(count: int) -> tuple[int, int]:
    stage, embedding = _stage()
    prompts = grid_prompts(HEIGHT, WIDTH, count)
    stage.decode(embedding, grid_prompts(HEIGHT, WIDTH, 2))  # kernels loaded before measuring
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        candidates = stage.decode(embedding, prompts)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(candidates) == count and all(len(rle["counts"]) > 0 for rle in candidates.rles)
    return peak, sum(len(rle["counts"]) for rle in candidates.rles)


def test_peak_memory_does_not_grow_with_prompts():
    small_peak, _ = _peak_bytes(32)
    large_peak, large_rle_bytes = _peak_bytes(512)
    # Holding every prompt's logits (the unstreamed path) would add 480 × 256 KB ≈ 126 MB.
    growth = large_peak - small_peak
    assert growth < 8 * LOW_RES_BYTES + 4 * large_rle_bytes, (small_peak, large_peak, large_rle_bytes)


def test_decode_masks_equal_the_streamed_rles():
    from clipsam.kernels import rle as rle_codec

    stage, embedding = _stage()
    prompts = grid_prompts(HEIGHT, WIDTH, 20)  # 3 chunks, the last one short
    dense = stage.decode_masks(embedding, prompts)
    streamed = stage.decode(embedding, prompts)
    assert [r["counts"] for r in streamed.rles] == [r["counts"] for r in rle_codec.encode_batch(dense.masks)]
    np.testing.assert_array_equal(streamed.iou, np.full(20, 0.9, np.float32))
    assert dense.masks.any(axis=(1, 2)).all() and not dense.masks.all(axis=(1, 2)).any()
