"""SCLIP image tower → ONNX: a batch of crops in, L2-normalised patch features out (CSA last block included).

All sliding windows of an image go through one call, so the crop count N is a symbolic dimension. The
tracing wrapper keeps every reshape free of the batch size (it is always -1), writes the attention out
explicitly (torch's fused multi-head-attention fast path has no ONNX export) and stores the positional
embedding of the exported crop size as a constant: the crop size is fixed at export.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from clipsam.export.clip_model import SclipModel
from clipsam.export.onnx_utils import export_onnx, graph_report

INPUT_NAME = "crops"
OUTPUT_NAME = "patch_features"
BATCH_DIM = "num_crops"
PARITY_CROP_COUNTS = (1, 6)  # measured at export: the single crop and a multi-crop batch
_TRACE_CROP_COUNT = 2  # not 1, so that no size-1 batch can be mistaken for a broadcast by the tracer
_PARITY_SEED = 20241


def _split_heads(attn: nn.MultiheadAttention, x: torch.Tensor, tokens: int) -> torch.Tensor:
    """x [N, T, C] -> q, k, v stacked as [3, N, heads, T, hd] from the block's own in-projection."""
    width = attn.embed_dim
    heads = attn.num_heads
    qkv = F.linear(x, attn.in_proj_weight, attn.in_proj_bias)  # [N, T, 3C]
    return qkv.reshape(-1, tokens, 3, heads, width // heads).permute(2, 0, 3, 1, 4)


def _merge_heads(attn: nn.MultiheadAttention, values: torch.Tensor, tokens: int) -> torch.Tensor:
    """values [N, heads, T, hd] -> out_proj of the concatenated heads, [N, T, C]."""
    return attn.out_proj(values.transpose(1, 2).reshape(-1, tokens, attn.embed_dim))


def _self_attention(attn: nn.MultiheadAttention, x: torch.Tensor, tokens: int) -> torch.Tensor:
    """CLIP's standard attention, no mask: out_proj(softmax(q kᵀ · s) v). x [N, T, C] -> [N, T, C]."""
    scale = (attn.embed_dim // attn.num_heads) ** -0.5
    q, k, v = _split_heads(attn, x, tokens)  # each [N, heads, T, hd]
    weights = torch.softmax((q * scale) @ k.transpose(-1, -2), dim=-1)  # [N, heads, T, T]
    return _merge_heads(attn, weights @ v, tokens)


def _correlative_self_attention(
    attn: nn.MultiheadAttention, x: torch.Tensor, tokens: int, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """SCLIP's CSA: out_proj((softmax(q qᵀ · s + M) + softmax(k kᵀ · s + M)) v). x [N, T, C] -> [N, T, C];
    bias: M float32 [N, 1, T, T] (issue 26's region mask), None = no M."""
    scale = (attn.embed_dim // attn.num_heads) ** -0.5
    q, k, v = _split_heads(attn, x, tokens)  # each [N, heads, T, hd]
    q_logits, k_logits = q @ q.transpose(-1, -2) * scale, k @ k.transpose(-1, -2) * scale
    if bias is not None:
        q_logits, k_logits = q_logits + bias, k_logits + bias
    weights = torch.softmax(q_logits, dim=-1) + torch.softmax(k_logits, dim=-1)  # [N, heads, T, T]
    return _merge_heads(attn, weights @ v, tokens)


class SclipTowerGraph(nn.Module):
    """Trace-friendly SCLIP image tower.

    crops float32 [N, 3, crop, crop] (RGB, CLIP mean/std on 0–255) -> patch_features float32 [N, L, D],
    L2-normalised, L = (crop / patch)² in row-major patch order, CLS dropped; equal to
    `SclipModel.encode_crops`.
    """

    def __init__(self, model: SclipModel, crop: int):
        super().__init__()
        if crop % model.patch_size:
            raise ValueError(f"crop size {crop} is not a multiple of the patch size {model.patch_size}")
        grid = crop // model.patch_size
        self.visual = model.clip.visual
        self.tokens = 1 + grid * grid
        with torch.no_grad():
            # The model's own table (interpolated the SCLIP way if crop is not its native size), with the
            # class embedding folded into row 0: the graph then prepends a zero token instead of expanding
            # the class embedding to a runtime batch size (no Shape/Expand/Where chain).
            table = model._positional_embedding(grid, grid).detach().clone()  # [1 + L, C]
            table[0] += self.visual.class_embedding
        self.register_buffer("token_embedding", table, persistent=False)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return self.tower(crops, None)

    def tower(self, crops: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """crops [N, 3, crop, crop] -> patch features [N, L, D]; bias: the last block's M (or None)."""
        visual = self.visual
        width = visual.class_embedding.shape[0]
        patches = visual.conv1(crops).reshape(-1, width, self.tokens - 1).transpose(1, 2)  # [N, L, C]
        # A zero CLS slot shaped from the patches themselves: F.pad or zeros_like would size it through a
        # Shape/Slice chain that the exporter cannot fold, and the output's L would lose its static value.
        cls_slot = patches[:, :1] * 0.0  # [N, 1, C]
        x = torch.cat([cls_slot, patches], dim=1)  # [N, 1 + L, C]
        x = visual.ln_pre(x + self.token_embedding)  # [N, 1 + L, C]
        *blocks, last = visual.transformer.resblocks
        for block in blocks:
            x = x + block.ls_1(_self_attention(block.attn, block.ln_1(x), self.tokens))
            x = x + block.ls_2(block.mlp(block.ln_2(x)))
        x = x + last.ls_1(_correlative_self_attention(last.attn, last.ln_1(x), self.tokens, bias))
        x = x + last.ls_2(last.mlp(last.ln_2(x)))
        patch_tokens = x[:, 1 : self.tokens]  # [N, L, C]; explicit end: an open one leaves L unknown to ONNX
        features = visual.ln_post(patch_tokens) @ visual.proj  # [N, L, D]; ln_post acts per token
        norms = torch.linalg.vector_norm(features, dim=-1, keepdim=True)  # [N, L, 1]
        return features / norms.clamp_min(1e-12)  # F.normalize, without its Shape/Expand pair


def measure_sclip_parity(
    model: SclipModel, path: Path | str, crop: int, crop_counts: tuple[int, ...] = PARITY_CROP_COUNTS
) -> dict[str, float]:
    """Max abs error of `patch_features` (onnxruntime, CPU) against `model.encode_crops` on fresh random
    crops, one figure per crop count: {"patch_features[N=n]": error}."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(_PARITY_SEED)
    parity = {}
    for count in crop_counts:
        crops = torch.randn(count, 3, crop, crop, generator=generator)
        (exported,) = session.run([OUTPUT_NAME], {INPUT_NAME: crops.numpy()})
        with torch.inference_mode():
            reference = model.encode_crops(crops).numpy()
        parity[f"{OUTPUT_NAME}[N={count}]"] = float(np.abs(exported - reference).max())
    return parity


def export_sclip_tower(model: SclipModel, path: Path, *, crop: int = 224) -> dict[str, Any]:
    """Export SCLIP's image tower to ONNX at `path` (atomic) and check it against `encode_crops`.

    Graph: input `crops` float32 [num_crops, 3, crop, crop]; output `patch_features` float32
    [num_crops, (crop / patch)², embed_dim].
    Returns {"io_specs", "op_census", "forbidden_ops", "parity" ({"patch_features[N=n]": max abs error} for
    n in PARITY_CROP_COUNTS), "export_seconds", "opset", "crop", "patch", "embed_dim"}.
    """
    graph = SclipTowerGraph(model, crop).eval()
    trace_crops = torch.randn(_TRACE_CROP_COUNT, 3, crop, crop, generator=torch.Generator().manual_seed(0))
    started = time.perf_counter()
    export_onnx(
        graph,
        (trace_crops,),
        path,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_axes={INPUT_NAME: {0: BATCH_DIM}, OUTPUT_NAME: {0: BATCH_DIM}},
    )
    return {
        **graph_report(path, time.perf_counter() - started),
        "parity": measure_sclip_parity(model, path, crop),
        "crop": crop,
        "patch": model.patch_size,
        "embed_dim": model.embed_dim,
    }
