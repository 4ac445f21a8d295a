"""SAM2's prompt decoder rewritten by exact linear algebra (issue 5): same weights, same function, less work.

Two graphs replace the faithful `sam2_decoder.onnx` (export/onnx_sam2_decoder.py):

`sam2_decoder_image.onnx`, run ONCE per image after the encoder (inputs: the encoder's `image_embed`
[1, 256, 64, 64], `high_res_feats_0` [1, 32, 256, 256], `high_res_feats_1` [1, 64, 128, 128]) → the
prompt-independent part of the decoder, N = 64·64 pixels in row-major order, H = 8 heads of d = 16:
- `image_src` [1, N, 256]: image_embed + no_mask_embed (the `keys` before transformer layer 0), channel-last,
  plus layer 0's image→token out_proj bias (the residual that attention's output is added to).
- `layer0_keys` [1, H, d, N], `layer0_values` [1, H, N, d]: layer 0 token→image k_proj(src + PE), v_proj(src).
- `layer0_queries` [1, H, N, d]: layer 0 image→token q_proj(src + PE).
- `high_res_s1` [1, N, 256] = feat_s1 as (row i, col j) × (sub-row a, sub-col b, channel) of each 2×2 block
  and `high_res_s0` [1, 4N, 128] = feat_s0 as (i, j, a, b) × (a', b', channel): the layouts the channel-last
  upscaling below produces, so no per-prompt map is ever transposed; each holds its transposed conv's bias.
A separate graph rather than extra encoder outputs: the encoder artifact stays the one the faithful decoder
reads (both decoders run from the same encoder), and this 0.8 GFLOP step depends on decoder weights only.

`sam2_fast_decoder.onnx`: the image tensors above + the faithful PROMPT contract unchanged (`point_coords`
[B, P, 2], `point_labels` int32 [B, P], `mask_input` [B, 1, 256, 256], `has_mask_input` [B]) → the faithful
outputs (`low_res_masks` [B, 4, 256, 256], `iou_predictions` [B, 4], `object_score_logits` [B, 1]).

The algebra (all exact up to float rounding):
- Mask prompts: the dense embedding is conv1x1(g) with g the 16-channel mask features, so a prompt's src is
  image_src + has·(W_d g + b_d − no_mask) = image_src + D·G', G' = has·[g, 1] [B, N, 17]. Every layer-0
  projection of src is the shared per-image map plus (W·D)·G' — a 17-wide correction, so prompts with and
  without masks share one graph and the shared part is never copied per prompt.
- Image→token attention (softmax over the T tokens): queries q(x) = W_q x + b_q fold onto the token keys
  (K' = W_qᵀ k, bias b_qᵀ k), and out_proj folds onto the token values (V' = v W_o,hᵀ per head) so the
  per-pixel work is one [N, 256] × [256, H·T] and one [N, H·T] × [H·T, 256] product.
- Token→image attention (softmax over pixels): W_k folds onto the token queries (its bias adds a constant per
  row, which softmax ignores) and W_v acts after the pixel sum (softmax rows sum to one, so b_v stays as is).
- Upscaling: each stride-2 2×2 transposed conv is a per-pixel matmul to (a, b, channel) followed by a
  pixel shuffle; the shuffles are deferred to the 4-channel mask logits at the very end.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from clipsam.export.onnx_sam2_decoder import (
    DYNAMIC_AXES,
    OUTPUT_NAMES,
    Sam2PromptDecoder,
    random_features,
    random_prompts,
    reference_for_prompts,
)
from clipsam.export.onnx_utils import OPSET, export_onnx, forbidden_ops, io_specs, op_census

if TYPE_CHECKING:
    from clipsam.export.sam2_model import Sam2Model

FEATURE_NAMES = ["image_embed", "high_res_feats_0", "high_res_feats_1"]
IMAGE_OUTPUT_NAMES = [
    "image_src",
    "layer0_keys",
    "layer0_values",
    "layer0_queries",
    "high_res_s1",
    "high_res_s0",
]
PROMPT_INPUT_NAMES = ["point_coords", "point_labels", "mask_input", "has_mask_input"]
FAST_INPUT_NAMES = IMAGE_OUTPUT_NAMES + PROMPT_INPUT_NAMES
IMAGE_GRAPH, FAST_GRAPH = "sam2_decoder_image.onnx", "sam2_fast_decoder.onnx"


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[..., L, H·d] → [..., H, L, d]."""
    *lead, length, width = x.shape
    return x.reshape(*lead, length, heads, width // heads).transpose(-3, -2)


class Sam2DecoderImage(nn.Module):
    """The per-image half: encoder features → the prompt-independent decoder tensors (module docstring)."""

    def __init__(self, sam2_base: nn.Module) -> None:
        super().__init__()
        self.faithful = Sam2PromptDecoder(sam2_base)
        layer0 = self.faithful.mask_decoder.transformer.layers[0]
        self.token_to_image, self.image_to_token = (
            layer0.cross_attn_token_to_image,
            layer0.cross_attn_image_to_token,
        )
        self.heads = layer0.cross_attn_token_to_image.num_heads
        self.no_mask = self.faithful.prompt_encoder.no_mask_embed.weight  # [1, C]
        upconv_1, _, _, upconv_2, _ = self.faithful.mask_decoder.output_upscaling
        with torch.no_grad():  # each bias once per (a, b) column block; a constant, not a Tile op
            self.register_buffer("up_1_bias", upconv_1.bias.repeat(4).clone(), persistent=False)
            self.register_buffer("up_2_bias", upconv_2.bias.repeat(4).clone(), persistent=False)

    def forward(self, image_embed, high_res_feats_0, high_res_feats_1):
        src = image_embed.flatten(2).transpose(1, 2) + self.no_mask  # [1, N, C]
        src_pe = src + self.faithful.image_pe.flatten(2).transpose(1, 2)
        keys = _heads(self.token_to_image.k_proj(src_pe), self.heads).transpose(-1, -2)  # [1, H, d, N]
        values = _heads(self.token_to_image.v_proj(src), self.heads)  # [1, H, N, d]
        queries = _heads(self.image_to_token.q_proj(src_pe), self.heads)  # [1, H, N, d]
        # Biases that every prompt would add to a per-prompt map, added once here instead.
        residual = src + self.image_to_token.out_proj.bias
        high_res_s1 = _blocks(high_res_feats_1, 1) + self.up_1_bias
        high_res_s0 = _blocks(high_res_feats_0, 2) + self.up_2_bias
        return residual, keys, values, queries, high_res_s1, high_res_s0


def _blocks(feature: torch.Tensor, levels: int) -> torch.Tensor:
    """[1, c, 64·2^L, 64·2^L] → [1, 64·64·4^(L-1), 4·c]: rows (i, j, a1, b1, …), columns (a_L, b_L, c),
    where pixel row = i·2^L + a1·2^(L-1) + … + a_L (columns alike with j, b)."""
    channels, grid = feature.shape[1], feature.shape[2] >> levels
    x = feature.reshape([channels, grid] + [2] * levels + [grid] + [2] * levels)
    a_axes = list(range(2, 2 + levels))  # axes: c, i, a1..aL, j, b1..bL
    b_axes = list(range(3 + levels, 3 + 2 * levels))
    rows = [1, 2 + levels] + [axis for pair in zip(a_axes[:-1], b_axes[:-1], strict=True) for axis in pair]
    return x.permute(rows + [a_axes[-1], b_axes[-1], 0]).reshape(1, -1, 4 * channels)


class Sam2FastDecoder(nn.Module):
    """The per-prompt half: image tensors + the faithful prompt contract → the faithful outputs."""

    def __init__(self, sam2_base: nn.Module) -> None:
        super().__init__()
        self.faithful = Sam2PromptDecoder(sam2_base)
        decoder, encoder = self.faithful.mask_decoder, self.faithful.prompt_encoder
        self.transformer = decoder.transformer
        self.heads = self.transformer.layers[0].cross_attn_token_to_image.num_heads
        self.first = 1 if decoder.pred_obj_scores else 0
        with torch.no_grad():
            self._fold_weights(decoder, encoder)

    def _fold_weights(self, decoder, encoder) -> None:
        """Constant folds of the weights (buffers, so the exporter stores them as initializers)."""
        tokens = [decoder.iou_token.weight, decoder.mask_tokens.weight]
        if decoder.pred_obj_scores:
            tokens.insert(0, decoder.obj_score_token.weight)
        self.register_buffer("output_tokens", torch.cat(tokens).clone(), persistent=False)
        pe = self.faithful.image_pe.flatten(2).transpose(1, 2)  # [1, N, C]
        self.register_buffer("pixel_pe", pe.clone(), persistent=False)
        conv = encoder.mask_downscaling[-1]  # 1×1 conv 16 → C: D = [W_d, b_d − no_mask]  [C, 17]
        mask_weight = torch.cat(
            [conv.weight[:, :, 0, 0], (conv.bias - encoder.no_mask_embed.weight[0])[:, None]], 1
        )
        self.register_buffer("mask_to_src", mask_weight.T.clone(), persistent=False)  # [17, C]
        layer0 = self.transformer.layers[0]
        for name, proj in (
            ("mask_keys", layer0.cross_attn_token_to_image.k_proj),
            ("mask_values", layer0.cross_attn_token_to_image.v_proj),
            ("mask_queries", layer0.cross_attn_image_to_token.q_proj),
        ):  # [H, 17, d]: per head, the 17 mask channels → that head's projection
            folded = (proj.weight @ mask_weight).T  # [17, H·d]
            self.register_buffer(name, _heads(folded, self.heads).clone(), persistent=False)
        upconv_1, norm_1, _, upconv_2, _ = decoder.output_upscaling
        # ConvTranspose2d weight [in, out, 2, 2] → per-pixel matmul [in, (a, b, out)].
        for name, conv in (("up_1", upconv_1), ("up_2", upconv_2)):
            weight = conv.weight.permute(0, 2, 3, 1).reshape(conv.weight.shape[0], -1)
            self.register_buffer(f"{name}_weight", weight.clone(), persistent=False)
        self.norm_1 = norm_1

    def forward(
        self,
        image_src: torch.Tensor,
        layer0_keys: torch.Tensor,
        layer0_values: torch.Tensor,
        layer0_queries: torch.Tensor,
        high_res_s1: torch.Tensor,
        high_res_s0: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Arrays as in the module docstring → (low_res_masks, iou_predictions, object_score_logits)."""
        decoder = self.faithful.mask_decoder
        sparse = self.faithful._embed_points(point_coords, point_labels)  # [B, P + 1, C]
        count = sparse.shape[0]
        tokens = torch.cat([self.output_tokens.unsqueeze(0).expand(count, -1, -1), sparse], 1)  # [B, T, C]
        down = self.faithful.prompt_encoder.mask_downscaling[:-1](mask_input).flatten(2)  # [B, 16, N]
        mask_feats = torch.cat([down, torch.ones_like(down[:, :1])], 1).transpose(1, 2)  # [B, N, 17]
        mask_feats = has_mask_input.reshape(-1, 1, 1) * mask_feats  # G': all zero without a mask
        shared = (image_src, layer0_keys, layer0_values, layer0_queries)
        queries, pixels = self._layer0(tokens, shared, mask_feats)
        queries, pixels = self._later_layers(queries, pixels, tokens)
        mask_tokens = queries[:, self.first + 1 : self.first + 1 + decoder.num_mask_tokens]  # [B, 4, C]
        mlps = decoder.output_hypernetworks_mlps
        hyper = torch.stack([mlp(mask_tokens[:, i]) for i, mlp in enumerate(mlps)], 1)  # [B, 4, C/8]
        iou = decoder.iou_prediction_head(queries[:, self.first])
        if decoder.pred_obj_scores:
            object_score = decoder.pred_obj_score_head(queries[:, 0])
        else:  # sam2's default without an object-score head, as in the faithful graph
            object_score = 10.0 * torch.ones_like(iou[:, :1])
        return self._upscale(pixels, hyper, high_res_s1, high_res_s0), iou, object_score

    def _layer0(self, tokens, shared, mask_feats):
        """Block 0 with its image-side projections precomputed → (tokens [B, T, C], pixels [B, N, C])."""
        src, keys0, values0, queries0 = shared
        layer = self.transformer.layers[0]
        queries = layer.norm1(layer.self_attn(q=tokens, k=tokens, v=tokens))  # no PE, no residual in block 0
        # Token→image: shared scores + the mask correction (qᵀ W_k D) G'.
        attn = layer.cross_attn_token_to_image
        q = _heads(attn.q_proj(queries + tokens), self.heads) * _scale(attn)  # [B, H, T, d]
        feats = mask_feats.unsqueeze(1)  # [B, 1, N, 17]
        mask_q = q @ self.mask_keys.transpose(1, 2)  # [B, H, T, 17]
        weights = (q @ keys0 + mask_q @ feats.transpose(-1, -2)).softmax(-1)  # [B, H, T, N]
        out = weights @ values0 + (weights @ feats) @ self.mask_values  # [B, H, T, d]
        queries = layer.norm2(queries + attn.out_proj(_merge(out)))
        queries = layer.norm3(queries + layer.mlp(queries))
        # Image→token: keys / values from the tokens, out_proj folded onto the token values.
        attn = layer.cross_attn_image_to_token
        k = _heads(attn.k_proj(queries + tokens), self.heads) * _scale(attn)  # [B, H, T, d]
        mask_k = (k @ self.mask_queries.transpose(1, 2)).flatten(1, 2)  # [B, H·T, 17]
        scores = (queries0 @ k.transpose(-1, -2)).transpose(1, 2)  # [B, N, H, T]
        scores = scores + (mask_feats @ mask_k.transpose(1, 2)).unflatten(-1, (self.heads, -1))
        weights = scores.softmax(-1).flatten(2)  # [B, N, H·T]
        mask_to_src = self.mask_to_src.expand(tokens.shape[0], -1, -1)  # [B, 17, C]
        values = torch.cat([self._token_values(attn, queries), mask_to_src], 1)  # [B, H·T + 17, C]
        pixels = src + torch.cat([weights, mask_feats], 2) @ values  # out_proj's bias is in image_src
        return queries, layer.norm4(pixels)

    def _later_layers(self, queries, pixels, tokens):
        """Blocks 1.. and the final token→image attention, every projection folded onto the tokens."""
        for layer in self.transformer.layers[1:]:
            q = queries + tokens
            queries = layer.norm1(queries + layer.self_attn(q=q, k=q, v=queries))
            pixels_pe = pixels + self.pixel_pe  # [B, N, C]
            out = self._token_to_image(layer.cross_attn_token_to_image, queries + tokens, pixels, pixels_pe)
            queries = layer.norm2(queries + out)
            queries = layer.norm3(queries + layer.mlp(queries))
            attn = layer.cross_attn_image_to_token
            k = _heads(attn.k_proj(queries + tokens), self.heads) * _scale(attn)  # [B, H, T, d]
            w_q = attn.q_proj.weight.reshape(self.heads, -1, attn.q_proj.weight.shape[1])  # [H, d, C]
            folded_keys = (k @ w_q).flatten(1, 2)  # [B, H·T, C]
            bias = (k * attn.q_proj.bias.reshape(self.heads, 1, -1)).sum(-1).flatten(1)  # [B, H·T]
            scores = pixels_pe @ folded_keys.transpose(1, 2) + bias.unsqueeze(1)  # [B, N, H·T]
            weights = scores.unflatten(-1, (self.heads, -1)).softmax(-1).flatten(2)
            # Each head's weights sum to 1 over the tokens, so b_o / H on every value row adds b_o.
            values = self._token_values(attn, queries) + attn.out_proj.bias / self.heads
            pixels = layer.norm4(pixels + weights @ values)
        final = self.transformer.final_attn_token_to_image
        out = self._token_to_image(final, queries + tokens, pixels, pixels + self.pixel_pe)
        return self.transformer.norm_final_attn(queries + out), pixels

    def _token_to_image(self, attn, token_queries, pixels, pixels_pe):
        """Token→image attention, W_k folded onto the queries and W_v after the pixel sum → [B, T, C]."""
        q = _heads(attn.q_proj(token_queries), self.heads) * _scale(attn)  # [B, H, T, d]
        w_k = attn.k_proj.weight.reshape(self.heads, -1, attn.k_proj.weight.shape[1])  # [H, d, C]
        folded = (q @ w_k).flatten(1, 2)  # [B, H·T, C]; k_proj's bias shifts each row: softmax drops it
        weights = (folded @ pixels_pe.transpose(1, 2)).softmax(-1)  # [B, H·T, N]
        pooled = (weights @ pixels).unflatten(1, (self.heads, -1))  # [B, H, T, C]
        w_v = attn.v_proj.weight.reshape(self.heads, -1, w_k.shape[2]).transpose(1, 2)  # [H, C, d]
        out = pooled @ w_v + attn.v_proj.bias.reshape(self.heads, 1, -1)  # rows of weights sum to 1
        return attn.out_proj(_merge(out))

    def _token_values(self, attn, queries):
        """Per head, the token values through that head's slice of out_proj: [B, H·T, C]."""
        v = _heads(attn.v_proj(queries), self.heads)  # [B, H, T, d]
        w_o = attn.out_proj.weight.T.reshape(self.heads, -1, attn.out_proj.weight.shape[0])  # [H, d, C]
        return (v @ w_o).flatten(1, 2)

    def _upscale(self, pixels, hyper, high_res_s1, high_res_s0):
        """Channel-last upscaling: pixels [B, N, C], hyper [B, 4, C/8] → logits [B, 4, 256, 256].

        The transposed convs are matmuls to (a, b, channel) columns; rows stay (i, j, a, b, …) until one
        pixel shuffle of the 4-channel logits at the end."""
        count, channels = pixels.shape[0], self.norm_1.weight.shape[0]
        up = (pixels @ self.up_1_weight + high_res_s1).reshape(count, -1, channels)  # s1, s0 hold the biases
        up = nn.functional.layer_norm(up, (channels,), self.norm_1.weight, self.norm_1.bias, self.norm_1.eps)
        up = nn.functional.gelu(up) @ self.up_2_weight + high_res_s0  # [B, 4N, (a', b', c)]
        up = nn.functional.gelu(up.reshape(count, -1, hyper.shape[2]))  # [B, 16N, C/8]
        # hyper @ upᵀ: onnxruntime folds the transpose into its GEMM, and the mask axis is already in front,
        # so the shuffle moves whole 2-float runs (same values as up @ hyperᵀ).
        logits = (hyper @ up.transpose(1, 2)).reshape(count, hyper.shape[1], 64, 64, 2, 2, 2, 2)
        return logits.permute(0, 1, 2, 4, 6, 3, 5, 7).reshape(count, hyper.shape[1], 256, 256)


def _scale(attn: nn.Module) -> float:
    """SDPA's default scale for this attention's head width."""
    return float(attn.internal_dim // attn.num_heads) ** -0.5


def _merge(x: torch.Tensor) -> torch.Tensor:
    """[B, H, L, d] → [B, L, H·d]."""
    return x.transpose(1, 2).flatten(2)


def export_sam2_fast_decoder(
    model: Sam2Model, out_dir: Path, parity_batches: tuple[int, ...] = (1, 7)
) -> dict:
    """Export the image graph and the fast decoder graph into `out_dir` (atomic writes) and measure parity.

    Returns {"image": {inputs, outputs, op_census}, "decoder": {inputs, outputs, op_census}, "opset",
    "export_seconds", "parity": {"batch_B": {output: max abs error vs sam2}}}. Raises RuntimeError (and
    removes both files) when a graph holds a forbidden op.
    """
    out_dir = Path(out_dir)
    features = {name: torch.from_numpy(value) for name, value in random_features(seed=0).items()}
    image_module, fast_module = Sam2DecoderImage(model.module).eval(), Sam2FastDecoder(model.module).eval()
    started = time.perf_counter()
    image_path, fast_path = out_dir / IMAGE_GRAPH, out_dir / FAST_GRAPH
    example_features = tuple(features[name] for name in FEATURE_NAMES)
    export_onnx(
        image_module, example_features, image_path, input_names=FEATURE_NAMES, output_names=IMAGE_OUTPUT_NAMES
    )
    with torch.no_grad():
        image_tensors = image_module(*example_features)
    prompts = random_prompts(2, 3, seed=0)  # two prompts of three points: no size-1 dim to specialise on
    example = (*image_tensors, *(torch.from_numpy(prompts[name]) for name in PROMPT_INPUT_NAMES))
    dynamic = {name: axes for name, axes in DYNAMIC_AXES.items() if name in PROMPT_INPUT_NAMES + OUTPUT_NAMES}
    export_onnx(
        fast_module, example, fast_path, input_names=FAST_INPUT_NAMES, output_names=OUTPUT_NAMES,
        dynamic_axes=dynamic,
    )  # fmt: skip
    export_seconds = time.perf_counter() - started
    report: dict = {"opset": OPSET, "export_seconds": round(export_seconds, 2)}
    for key, path in (("image", image_path), ("decoder", fast_path)):
        census = op_census(path)
        if forbidden := forbidden_ops(census):
            image_path.unlink(missing_ok=True)
            fast_path.unlink(missing_ok=True)
            raise RuntimeError(f"{path.name} holds forbidden ops {forbidden}; nothing was written")
        report[key] = {**io_specs(path), "op_census": census}
    report["parity"] = {
        f"batch_{count}": measure_fast_parity(model, image_path, fast_path, count) for count in parity_batches
    }
    return report


class FastDecoderSessions:
    """The two fast graphs on onnxruntime's CPU provider, fed numpy arrays; for checks and benchmarks."""

    def __init__(self, image_path: Path, fast_path: Path, threads: int | None = None) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        providers = ["CPUExecutionProvider"]
        self.image = onnxruntime.InferenceSession(str(image_path), options, providers=providers)
        self.decoder = onnxruntime.InferenceSession(str(fast_path), options, providers=providers)

    def image_tensors(self, features: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Encoder features (FEATURE_NAMES) → the per-image tensors (IMAGE_OUTPUT_NAMES)."""
        values = self.image.run(IMAGE_OUTPUT_NAMES, {name: features[name] for name in FEATURE_NAMES})
        return dict(zip(IMAGE_OUTPUT_NAMES, values, strict=True))

    def decode(
        self, image_tensors: dict[str, np.ndarray], prompts: dict[str, np.ndarray], chunk_size: int = 16
    ) -> dict[str, np.ndarray]:
        """Prompts (PROMPT_INPUT_NAMES, B rows) → OUTPUT_NAMES arrays of B rows, in chunks of `chunk_size`."""
        count = prompts["point_labels"].shape[0]
        parts: dict[str, list[np.ndarray]] = {name: [] for name in OUTPUT_NAMES}
        for start in range(0, count, chunk_size):
            feeds = {name: prompts[name][start : start + chunk_size] for name in PROMPT_INPUT_NAMES}
            values = self.decoder.run(OUTPUT_NAMES, {**image_tensors, **feeds})
            for name, value in zip(OUTPUT_NAMES, values, strict=True):
                parts[name].append(value)
        return {name: np.concatenate(values) for name, values in parts.items()}


def measure_fast_parity(
    model: Sam2Model,
    image_path: Path,
    fast_path: Path,
    prompt_count: int,
    point_count: int = 4,
    seed: int = 0,
    *,
    chunk_size: int = 64,
) -> dict[str, float]:
    """Max abs error per output between the fast graphs (onnxruntime CPU) and sam2's own modules.

    Inputs: `random_features(seed)` and `random_prompts(prompt_count, point_count)` (point prompts, box
    prompts, negative clicks, -1 padding, a mask prompt on every other row). sam2 runs in chunks of 16.
    """
    features = random_features(seed)
    prompts = random_prompts(prompt_count, point_count, seed=seed + prompt_count)
    sessions = FastDecoderSessions(image_path, fast_path)
    got = sessions.decode(sessions.image_tensors(features), prompts, chunk_size)
    expected = reference_for_prompts(model, features, prompts)
    return {name: float(np.abs(got[name] - expected[name]).max()) for name in OUTPUT_NAMES}
