"""SCLIP's image tower with region-restricted correlative self-attention (issue 26) → ONNX.

Inputs `crops` float32 [N, 3, crop, crop] and `patch_regions` int32 [N, L] (each patch's region id, 0 = none);
output `patch_features` float32 [N, L, D], L2-normalised. The mask M of the last block is built inside the
graph from the ids (no [L, L] tensor from the host): M[i, j] = 0 when tokens i and j share a non-zero region
or either is in region 0 (the CLS token counts as region 0), −inf otherwise, as log(allowed). All else is
the plain tower's graph (export/onnx_sclip.py), so with every patch in one region it equals it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clipsam.export.clip_model import SclipModel, region_attention_bias
from clipsam.export.onnx_sclip import BATCH_DIM, INPUT_NAME, OUTPUT_NAME, PARITY_CROP_COUNTS, SclipTowerGraph
from clipsam.export.onnx_utils import export_onnx, graph_report

REGIONS_INPUT = "patch_regions"
GRAPH_NAME = "sclip_tower_regions"
_TRACE_CROP_COUNT = 2
_PARITY_SEED = 20261
_PARITY_REGIONS = 5  # ids 0..4 at random: region 0 and several regions in every window


class SclipRegionTowerGraph(SclipTowerGraph):
    """Trace-friendly region tower: (crops [N, 3, crop, crop], patch_regions int32 [N, L]) -> [N, L, D];
    equal to `SclipModel.encode_crops_with_regions`."""

    def forward(self, crops: torch.Tensor, patch_regions: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.tower(crops, region_attention_bias(patch_regions))


def parity_regions(count: int, patches: int, generator: torch.Generator) -> torch.Tensor:
    """int32 [count, patches] random region ids 0.._PARITY_REGIONS-1 (the parity and trace inputs)."""
    return torch.randint(0, _PARITY_REGIONS, (count, patches), generator=generator, dtype=torch.int32)


def measure_region_parity(
    model: SclipModel, path: Path | str, crop: int, crop_counts: tuple[int, ...] = PARITY_CROP_COUNTS
) -> dict[str, float]:
    """Max abs error of the graph (onnxruntime, CPU) against `model.encode_crops_with_regions` on fresh
    random crops and region ids, per crop count: {"patch_features[N=n]": error}."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(_PARITY_SEED)
    patches = (crop // model.patch_size) ** 2
    parity = {}
    for count in crop_counts:
        crops = torch.randn(count, 3, crop, crop, generator=generator)
        regions = parity_regions(count, patches, generator)
        feeds = {INPUT_NAME: crops.numpy(), REGIONS_INPUT: regions.numpy()}
        (exported,) = session.run([OUTPUT_NAME], feeds)
        with torch.inference_mode():
            reference = model.encode_crops_with_regions(crops, regions).numpy()
        parity[f"{OUTPUT_NAME}[N={count}]"] = float(np.abs(exported - reference).max())
    return parity


def export_sclip_region_tower(model: SclipModel, path: Path, *, crop: int = 224) -> dict[str, Any]:
    """Export the region tower to ONNX at `path` (atomic) and check it against `encode_crops_with_regions`.

    Returns the report of `export_sclip_tower` (io_specs, op_census, forbidden_ops, parity, export_seconds,
    opset, crop, patch, embed_dim).
    """
    graph = SclipRegionTowerGraph(model, crop).eval()
    generator = torch.Generator().manual_seed(0)
    trace_crops = torch.randn(_TRACE_CROP_COUNT, 3, crop, crop, generator=generator)
    trace_regions = parity_regions(_TRACE_CROP_COUNT, graph.tokens - 1, generator)
    started = time.perf_counter()
    export_onnx(
        graph,
        (trace_crops, trace_regions),
        path,
        input_names=[INPUT_NAME, REGIONS_INPUT],
        output_names=[OUTPUT_NAME],
        dynamic_axes={INPUT_NAME: {0: BATCH_DIM}, REGIONS_INPUT: {0: BATCH_DIM}, OUTPUT_NAME: {0: BATCH_DIM}},
    )
    return {
        **graph_report(path, time.perf_counter() - started),
        "parity": measure_region_parity(model, path, crop),
        "crop": crop,
        "patch": model.patch_size,
        "embed_dim": model.embed_dim,
    }
