"""SAM2 image encoder → ONNX: the features `SAM2ImagePredictor.set_image` stores, from the preprocessed image.

`set_image` runs `forward_image` (Hiera trunk, FPN neck, then the mask decoder's `conv_s0` / `conv_s1` on the
two high-resolution levels), `_prepare_backbone_features`, adds `no_mem_embed` to the lowest-resolution level
and keeps `{"image_embed", "high_res_feats"}`. Traced as is, that code leaves `If` and `Tile` in the graph
(Hiera's bicubic position-embedding resize and its window-embedding tile, the neck's sine position encodings
whose shapes size the outputs) and ~150 `Shape`/`Mod` chains from window partitioning. The input size is fixed
(1024²), so `Sam2EncoderGraph` runs the same modules with every size known in Python: the position embedding
is computed once by sam2's own code and stored as a constant, windows are cut with static reshapes, and the
unused position encodings are never built.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from clipsam.export.onnx_utils import export_onnx, graph_report
from clipsam.export.sam2_model import Sam2Model

IMAGE_SIZE = 1024  # sam2's square input; the graph is exported for this size only
INPUT_NAME = "image"
OUTPUT_NAMES = ("image_embed", "high_res_feats_0", "high_res_feats_1")
_PARITY_SEED = 20240  # fresh input for the export-time parity check, unrelated to the trace input


def _window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """[B, H, W, C] -> [B·nh·nw, window, window, C], zero-padded at the bottom/right as sam2 does."""
    batch, height, width, channels = (int(d) for d in x.shape)
    pad_h, pad_w = -height % window, -width % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    rows, cols = (height + pad_h) // window, (width + pad_w) // window
    x = x.reshape(batch, rows, window, cols, window, channels)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(batch * rows * cols, window, window, channels)


def _window_unpartition(
    windows: torch.Tensor, window: int, batch: int, height: int, width: int
) -> torch.Tensor:
    """[B·nh·nw, window, window, C] -> [B, H, W, C], the padding cut off."""
    channels = int(windows.shape[-1])
    rows, cols = -(-height // window), -(-width // window)
    x = windows.reshape(batch, rows, cols, window, window, channels)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(batch, rows * window, cols * window, channels)
    return x[:, :height, :width] if (rows * window, cols * window) != (height, width) else x


def _pool_nhwc(x: torch.Tensor, pool: nn.Module) -> torch.Tensor:
    """[B, H, W, C] -> [B, H', W', C] through an NCHW pooling module (Hiera's stride-2 max pool)."""
    return pool(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


def _multiscale_attention(attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Hiera's `MultiScaleAttention` with static shapes. x [B, H, W, C] -> [B, H', W', C_out]."""
    batch, height, width, _ = (int(d) for d in x.shape)
    heads = attn.num_heads
    head_dim = attn.dim_out // heads
    qkv = attn.qkv(x).reshape(batch, height * width, 3, heads, head_dim)
    q, k, v = torch.unbind(qkv, 2)  # each [B, H·W, heads, hd]
    if attn.q_pool is not None:
        q = _pool_nhwc(q.reshape(batch, height, width, heads * head_dim), attn.q_pool)
        height, width = int(q.shape[1]), int(q.shape[2])
        q = q.reshape(batch, height * width, heads, head_dim)
    # An explicit scale keeps the exporter from deriving it from the query's runtime shape.
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale=head_dim**-0.5
    )  # [B, heads, H'·W', hd]
    return attn.proj(out.transpose(1, 2).reshape(batch, height, width, heads * head_dim))


def _hiera_block(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Hiera's `MultiScaleBlock` (eval: drop-path is the identity). x [1, H, W, C] -> [1, H', W', C_out]."""
    batch, height, width, _ = (int(d) for d in x.shape)
    shortcut = x
    x = block.norm1(x)
    if block.dim != block.dim_out:
        shortcut = block.proj(x)
        if block.pool is not None:
            shortcut = _pool_nhwc(shortcut, block.pool)
    window = block.window_size
    if window > 0:
        x = _window_partition(x, window)
    x = _multiscale_attention(block.attn, x)
    if window > 0:
        stride = block.q_stride[0] if block.q_stride else 1
        out_h, out_w = int(shortcut.shape[1]), int(shortcut.shape[2])
        x = _window_unpartition(x, window // stride, batch, out_h, out_w)
    x = shortcut + x
    return x + block.mlp(block.norm2(x))


class Sam2EncoderGraph(nn.Module):
    """Trace-friendly SAM2 image encoder: `image` float32 [1, 3, 1024, 1024] (square-resized, ImageNet
    mean/std on [0, 1]) -> image_embed [1, 256, 64, 64] (`no_mem_embed` added), high_res_feats_0
    [1, 32, 256, 256] (`conv_s0`), high_res_feats_1 [1, 64, 128, 128] (`conv_s1`): strides 16, 4 and 8 of
    sam2's 1024 frame.
    """

    def __init__(self, sam2_base: nn.Module, image_size: int = IMAGE_SIZE):
        super().__init__()
        encoder = sam2_base.image_encoder
        assert sam2_base.use_high_res_features_in_sam and sam2_base.num_feature_levels == 3, (
            "the exported encoder assumes SAM2's high-res features path (3 levels, conv_s0/conv_s1)"
        )
        self.trunk = encoder.trunk
        self.neck = encoder.neck
        self.scalp = encoder.scalp
        self.conv_s0 = sam2_base.sam_mask_decoder.conv_s0
        self.conv_s1 = sam2_base.sam_mask_decoder.conv_s1
        self.add_no_mem_embed = bool(sam2_base.directly_add_no_mem_embed)
        self.no_mem_embed = sam2_base.no_mem_embed  # [1, 1, 256]
        grid = image_size // self.trunk.patch_embed.proj.stride[0]
        with torch.no_grad():
            # sam2's own computation, once: bicubic resize + window tile happen here, not in the graph.
            pos_embed = self.trunk._get_pos_embed((grid, grid)).detach().clone()  # [1, grid, grid, C]
        self.register_buffer("trunk_pos_embed", pos_embed, persistent=False)

    def _trunk(self, image: torch.Tensor) -> list[torch.Tensor]:
        """image [1, 3, S, S] -> Hiera's stage outputs, NCHW, highest resolution first."""
        x = self.trunk.patch_embed(image) + self.trunk_pos_embed  # [1, S/4, S/4, C]
        stage_outputs = []
        for index, block in enumerate(self.trunk.blocks):
            x = _hiera_block(block, x)
            if index in self.trunk.stage_ends:
                stage_outputs.append(x.permute(0, 3, 1, 2))
        return stage_outputs

    def _neck(self, stage_outputs: list[torch.Tensor]) -> list[torch.Tensor]:
        """FpnNeck's features without its position encodings (set_image never reads them), scalp applied."""
        neck = self.neck
        last = len(neck.convs) - 1
        levels: list[torch.Tensor] = [torch.empty(0)] * len(neck.convs)
        previous = None
        for i in range(last, -1, -1):  # lowest resolution first, as sam2's top-down pass
            lateral = neck.convs[last - i](stage_outputs[i])
            if i in neck.fpn_top_down_levels and previous is not None:
                top_down = F.interpolate(
                    previous.to(dtype=torch.float32),
                    scale_factor=2.0,
                    mode=neck.fpn_interp_model,
                    align_corners=None if neck.fpn_interp_model == "nearest" else False,
                    antialias=False,
                )
                previous = lateral + top_down
                if neck.fuse_type == "avg":
                    previous = previous / 2
            else:
                previous = lateral
            levels[i] = previous
        return levels[: len(levels) - self.scalp] if self.scalp > 0 else levels

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        levels = self._neck(self._trunk(image))
        high_res_0 = self.conv_s0(levels[0])  # [1, 32, 256, 256]
        high_res_1 = self.conv_s1(levels[1])  # [1, 64, 128, 128]
        image_embed = levels[2]  # [1, 256, 64, 64]
        if self.add_no_mem_embed:
            image_embed = image_embed + self.no_mem_embed.reshape(1, -1, 1, 1)
        return image_embed, high_res_0, high_res_1


def sam2_reference_features(sam2_base: nn.Module, image: torch.Tensor) -> dict[str, torch.Tensor]:
    """What `SAM2ImagePredictor.set_image` stores in `_features`, from an already preprocessed image, through
    sam2's own methods. image float32 [1, 3, 1024, 1024] -> {name in OUTPUT_NAMES: NCHW float32 tensor}."""
    with torch.inference_mode():
        backbone_out = sam2_base.forward_image(image)
        _, vision_feats, _, feat_sizes = sam2_base._prepare_backbone_features(backbone_out)
        if sam2_base.directly_add_no_mem_embed:
            vision_feats[-1] = vision_feats[-1] + sam2_base.no_mem_embed
        # [H·W, 1, C] -> [1, C, H, W], highest resolution first
        feats = [
            f.permute(1, 2, 0).reshape(1, -1, *size) for f, size in zip(vision_feats, feat_sizes, strict=True)
        ]
    return {"image_embed": feats[-1], "high_res_feats_0": feats[0], "high_res_feats_1": feats[1]}


def measure_sam2_parity(model: Sam2Model, path: Path | str, image: np.ndarray) -> dict[str, float]:
    """Max abs error per output of the ONNX file at `path` (onnxruntime, CPU) against sam2's torch code.

    image: float32 [1, 3, 1024, 1024], preprocessed.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = dict(zip(OUTPUT_NAMES, session.run(list(OUTPUT_NAMES), {INPUT_NAME: image}), strict=True))
    reference = sam2_reference_features(model.module, torch.from_numpy(image))
    return {name: float(np.abs(outputs[name] - reference[name].numpy()).max()) for name in OUTPUT_NAMES}


def export_sam2_encoder(model: Sam2Model, path: Path) -> dict[str, Any]:
    """Export `model`'s image encoder to ONNX at `path` (atomic) and check it against sam2's torch code.

    Graph: input `image` float32 [1, 3, 1024, 1024]; outputs image_embed [1, 256, 64, 64], high_res_feats_0
    [1, 32, 256, 256], high_res_feats_1 [1, 64, 128, 128], all float32.
    Returns {"io_specs", "op_census", "forbidden_ops", "parity" ({output: max abs error} on a fresh random
    input), "export_seconds", "opset", "image_size"}.
    """
    graph = Sam2EncoderGraph(model.module).eval()
    trace_input = torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(0))
    started = time.perf_counter()
    export_onnx(graph, (trace_input,), path, input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES))
    report = graph_report(path, time.perf_counter() - started)
    generator = torch.Generator().manual_seed(_PARITY_SEED)
    parity_input = torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator).numpy()
    return {
        **report,
        "parity": measure_sam2_parity(model, path, parity_input),
        "image_size": IMAGE_SIZE,
    }
