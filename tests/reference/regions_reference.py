"""Slow references of issue 26's accuracy mode, written from the issue's definition with loops, independently
of the fast code (export/clip_model.py, export/onnx_sclip_regions.py, engine/regions.py).

1. regions: grid masks kept by predicted IoU and area, class-agnostic greedy dedupe (IoU > threshold, higher
   predicted IoU first), painted in ascending area order (a larger mask overwrites a smaller one), 0 = none.
2. region-restricted correlative self-attention in SCLIP's last block:
   softmax(q qᵀ·s + M) + softmax(k kᵀ·s + M), M[i, j] = 0 when patches i and j share a non-zero region or
   either is in region 0, −inf otherwise; the CLS token attends and is attended as in SCLIP (no mask).
3. vote: every non-zero region takes its pixels' majority class (ties: the lower class id); region-0 pixels
   keep their label.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch

from clipsam.export.clip_model import SclipModel

CLS = None  # the CLS token's "region": it is never masked


def attention_mask(patch_regions: list[int]) -> torch.Tensor:
    """float32 [1 + L, 1 + L]: M of the definition for one window, CLS first."""
    ids = [CLS, *[int(r) for r in patch_regions]]
    mask = torch.full((len(ids), len(ids)), float("-inf"))
    for i, a in enumerate(ids):
        for j, b in enumerate(ids):
            if a is CLS or b is CLS or a == 0 or b == 0 or a == b:
                mask[i, j] = 0.0
    return mask


def _heads(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, heads: int) -> list[torch.Tensor]:
    """x [T, C] projected by weight [C, C] / bias [C], split into `heads` tensors [T, C // heads]."""
    projected = x @ weight.T + bias
    return list(projected.chunk(heads, dim=-1))


def restricted_csa(attn: torch.nn.MultiheadAttention, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """One window's last-block attention: x float32 [T, C] (after ln_1), mask [T, T] -> [T, C]."""
    width, heads = attn.embed_dim, attn.num_heads
    scale = (width // heads) ** -0.5
    w_q, w_k, w_v = attn.in_proj_weight.split(width)
    b_q, b_k, b_v = attn.in_proj_bias.split(width)
    outputs = []
    for q, k, v in zip(
        _heads(x, w_q, b_q, heads), _heads(x, w_k, b_k, heads), _heads(x, w_v, b_v, heads), strict=True
    ):
        weights = torch.softmax(q @ q.T * scale + mask, dim=-1) + torch.softmax(
            k @ k.T * scale + mask, dim=-1
        )
        outputs.append(weights @ v)
    return attn.out_proj(torch.cat(outputs, dim=-1))


def last_block(model: SclipModel, x: torch.Tensor, patch_regions: list[int] | None) -> torch.Tensor:
    """SCLIP's last block on one window's tokens x float32 [1 + L, C]; patch_regions None = no mask."""
    last = model.clip.visual.transformer.resblocks[-1]
    tokens = x.shape[0]
    mask = torch.zeros(tokens, tokens) if patch_regions is None else attention_mask(patch_regions)
    x = x + last.ls_1(restricted_csa(last.attn, last.ln_1(x), mask))
    return x + last.ls_2(last.mlp(last.ln_2(x)))


def tokens_before_last(model: SclipModel, crops: torch.Tensor) -> torch.Tensor:
    """crops float32 [N, 3, S, S] -> the last block's input tokens [N, 1 + L, C] (CLIP's first blocks)."""
    visual = model.clip.visual
    patches = visual.conv1(crops)
    grid_h, grid_w = patches.shape[-2:]
    x = patches.flatten(2).transpose(1, 2)
    cls = visual.class_embedding.expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + model._positional_embedding(grid_h, grid_w)
    x = visual.ln_pre(x)
    for block in visual.transformer.resblocks[:-1]:
        x = block(x)
    return x


def head(model: SclipModel, x: torch.Tensor) -> torch.Tensor:
    """Last-block output tokens [1 + L, C] -> L2-normalised patch features [L, D] (CLS dropped)."""
    visual = model.clip.visual
    features = visual.ln_post(x[1:]) @ visual.proj
    return features / features.norm(dim=-1, keepdim=True)


def encode_with_regions(
    model: SclipModel, crops: torch.Tensor, patch_regions: np.ndarray | None
) -> torch.Tensor:
    """crops float32 [N, 3, S, S], patch_regions int [N, L] (None: plain SCLIP) -> float32 [N, L, D]."""
    with torch.inference_mode():
        before = tokens_before_last(model, crops)
        return torch.stack(
            [
                head(
                    model,
                    last_block(model, before[n], None if patch_regions is None else list(patch_regions[n])),
                )
                for n in range(crops.shape[0])
            ]
        )


# --- regions, patch ids and the vote on numpy -------------------------------------------------------------


def region_map(
    masks: np.ndarray, iou: np.ndarray, min_iou: float, min_area: int, dedupe_iou: float
) -> np.ndarray:
    """masks bool [B, H, W], predicted iou [B] -> int32 [H, W] region ids (1.. painting order), 0 = none."""
    kept = [b for b in range(len(masks)) if iou[b] >= min_iou and masks[b].sum() >= min_area]
    kept.sort(key=lambda b: (-float(iou[b]), b))  # greedy: the higher predicted IoU survives
    survivors: list[int] = []
    for b in kept:
        duplicate = False
        for s in survivors:
            union = np.logical_or(masks[b], masks[s]).sum()
            inter = np.logical_and(masks[b], masks[s]).sum()
            if union and inter / union > dedupe_iou:
                duplicate = True
        if not duplicate:
            survivors.append(b)
    # ascending area; equal areas in survivor order
    order = sorted(range(len(survivors)), key=lambda k: (int(masks[survivors[k]].sum()), k))
    labels = np.zeros(masks.shape[1:], np.int32)
    for region_id, k in enumerate(order, start=1):
        labels[masks[survivors[k]]] = region_id
    return labels


def network_pixel_label(labels: np.ndarray, network_hw: tuple[int, int], y: int, x: int) -> int:
    """The region id of network-frame pixel (y, x): nearest image pixel, centres aligned."""
    height, width = labels.shape
    src_y = min(int((y + 0.5) * height / network_hw[0]), height - 1)
    src_x = min(int((x + 0.5) * width / network_hw[1]), width - 1)
    return int(labels[src_y, src_x])


def patch_regions(labels: np.ndarray, network_hw: tuple[int, int], windows, patch: int) -> np.ndarray:
    """int32 [N, L]: each window's patches' majority region id over the patch's pixels (ties: lower id)."""
    rows = []
    for y0, y1, x0, x1 in windows:
        ids = []
        for gy in range((y1 - y0) // patch):
            for gx in range((x1 - x0) // patch):
                counts = Counter(
                    network_pixel_label(labels, network_hw, y0 + gy * patch + dy, x0 + gx * patch + dx)
                    for dy in range(patch)
                    for dx in range(patch)
                )
                best = max(counts.values())
                ids.append(min(r for r, c in counts.items() if c == best))
        rows.append(ids)
    return np.array(rows, np.int32)


def vote(pred: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """pred int [H, W], region labels int [H, W] -> the voted pred int32 [H, W]."""
    out = pred.astype(np.int32).copy()
    for region in np.unique(labels):
        if region == 0:
            continue
        inside = labels == region
        counts = Counter(pred[inside].tolist())
        best = max(counts.values())
        out[inside] = min(c for c, n in counts.items() if n == best)
    return out
