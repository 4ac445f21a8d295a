"""SAM2 prompt encoder + mask decoder as ONE trace-friendly graph, its ONNX export and its sam2 reference.

Prompt contract (what the runtime feeds; the same as `SAM2ImagePredictor._predict` builds it):
- `point_coords` float32 [B, P, 2] (x, y) in SAM's 1024×1024 input frame, already scaled from the image frame
  as x·1024/W, y·1024/H (no +0.5: the graph adds sam2's pixel-centre shift itself).
- `point_labels` int32 [B, P]: 1 positive, 0 negative, 2 / 3 top-left / bottom-right box corner, -1 padding.
- A box prompt is two extra points put FIRST: coords (x0, y0), (x1, y1) with labels 2, 3, then the clicks —
  the order sam2's predictor concatenates them in.
- The runtime does NOT append sam2's trailing pad point: sam2's predictor always calls the prompt encoder with
  `boxes=None`, so `_embed_points` always appends one (0, 0) point labelled -1, with or without a box; the
  graph appends that not-a-point token itself, for every prompt. P ≥ 1.
- Prompts of one batch share P. Padding a shorter prompt with label -1 points (any coords) gives exactly what
  sam2 gives for the padded tensors, but every -1 token takes part in the attention, so it is NOT what sam2
  gives for the unpadded prompt alone: exact per-prompt equality with the one-prompt-at-a-time reference
  needs every prompt of a call to have the same number of real points (group calls by it when they differ).
- `mask_input` float32 [B, 1, 256, 256] low-resolution logits and `has_mask_input` float32 [B] (1 or 0): the
  dense embedding is has·mask_downscaling(mask_input) + (1 - has)·no_mask_embed, exact for 0/1 as long as
  mask_input is finite (feed zeros where unused).

Outputs: `low_res_masks` float32 [B, 4, 256, 256] logits of ALL mask tokens in the 256×256 low-res frame
(token 0 = single-mask output, tokens 1..3 = multimask output; unclamped — sam2 upsamples these and returns
them clamped to ±32 as its low-res masks), `iou_predictions` float32 [B, 4], `object_score_logits` float32
[B, 1]. No multimask selection, stability fallback or upsampling happens in the graph.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from clipsam.export.onnx_utils import OPSET, export_onnx, forbidden_ops, io_specs, op_census

if TYPE_CHECKING:
    from clipsam.export.sam2_model import Sam2Model

INPUT_NAMES = [
    "image_embed",
    "high_res_feats_0",
    "high_res_feats_1",
    "point_coords",
    "point_labels",
    "mask_input",
    "has_mask_input",
]
OUTPUT_NAMES = ["low_res_masks", "iou_predictions", "object_score_logits"]
_PROMPTS, _POINTS = "num_prompts", "num_points"
DYNAMIC_AXES = {
    "point_coords": {0: _PROMPTS, 1: _POINTS},
    "point_labels": {0: _PROMPTS, 1: _POINTS},
    "mask_input": {0: _PROMPTS},
    "has_mask_input": {0: _PROMPTS},
    "low_res_masks": {0: _PROMPTS},
    "iou_predictions": {0: _PROMPTS},
    "object_score_logits": {0: _PROMPTS},
}
EMBED_SHAPE = (1, 256, 64, 64)
HIGH_RES_SHAPES = ((1, 32, 256, 256), (1, 64, 128, 128))
MASK_INPUT_SIZE = 256
INPUT_FRAME = 1024
# Export-time parity batches (issue 4 asks for figures measured at export) and what they were measured on.
EXPORT_PARITY_BATCHES = (1, 7)
PARITY_INPUTS = (
    "onnxruntime CPU vs sam2 modules; random features (seed 0); 4 points per prompt: point-only and box "
    "prompts, negative clicks, -1 padding, mask_input on every other prompt"
)


class Sam2PromptDecoder(nn.Module):
    """sam2's prompt encoder + mask decoder (same weights, same function) written for tracing.

    Differences from sam2's code that change no number: the per-prompt copies of the image embedding and of
    its positional encoding are broadcasts instead of `repeat_interleave` (which traces to OneHot + Tile),
    the label-dependent point embedding is a chain of `where`, the mask/no-mask choice is arithmetic on
    `has_mask_input`, and the dense positional encoding is a constant buffer.
    """

    def __init__(self, sam2_base: nn.Module) -> None:
        super().__init__()
        self.prompt_encoder = sam2_base.sam_prompt_encoder
        self.mask_decoder = sam2_base.sam_mask_decoder
        assert self.mask_decoder.use_high_res_features, "the graph contract has two high-res feature inputs"
        with torch.no_grad():
            image_pe = self.prompt_encoder.get_dense_pe()  # [1, 256, 64, 64]
        self.register_buffer("image_pe", image_pe.clone(), persistent=False)

    def forward(
        self,
        image_embed: torch.Tensor,
        high_res_feats_0: torch.Tensor,
        high_res_feats_1: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Arrays as in the module docstring → (low_res_masks, iou_predictions, object_score_logits)."""
        sparse = self._embed_points(point_coords, point_labels)  # [B, P + 1, 256]
        dense = self._embed_dense(mask_input, has_mask_input)  # [B, 256, 64, 64]
        return self._decode(image_embed, (high_res_feats_0, high_res_feats_1), sparse, dense)

    def _embed_points(self, coords_1024: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """coords float32 [B, P, 2] (1024 frame), labels int32 [B, P] → sparse embeddings [B, P + 1, C]."""
        encoder = self.prompt_encoder
        frame_h, frame_w = encoder.input_image_size
        # sam2's shift to the pixel centre, then the division it does per axis in forward_with_coords.
        scale = torch.tensor([frame_w, frame_h], dtype=torch.float32)
        unit_coords = (coords_1024 + 0.5) / scale  # [B, P, 2] in [0, 1]
        embedding = encoder.pe_layer._pe_encoding(unit_coords)  # [B, P, C]
        labels = labels.unsqueeze(-1)  # [B, P, 1]
        # The same sequence of selections as PromptEncoder._embed_points, as element-wise Where ops.
        embedding = torch.where(
            labels == -1, torch.zeros_like(embedding) + encoder.not_a_point_embed.weight, embedding
        )
        for label, point_embed in enumerate(encoder.point_embeddings):
            embedding = torch.where(labels == label, embedding + point_embed.weight, embedding)
        # sam2's trailing pad point (label -1): its embedding is not_a_point_embed whatever its coordinates.
        pad = encoder.not_a_point_embed.weight.unsqueeze(0).expand(embedding.shape[0], -1, -1)  # [B, 1, C]
        return torch.cat([embedding, pad], dim=1)

    def _embed_dense(self, mask_input: torch.Tensor, has_mask_input: torch.Tensor) -> torch.Tensor:
        """mask_input [B, 1, 256, 256], has_mask_input [B] (0/1) → dense embeddings [B, C, 64, 64]."""
        encoder = self.prompt_encoder
        mask_embedding = encoder.mask_downscaling(mask_input)  # [B, C, 64, 64]
        no_mask = encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)  # [1, C, 1, 1]
        use_mask = has_mask_input.reshape(-1, 1, 1, 1)  # [B, 1, 1, 1]
        # Exact selection for 0/1 weights: x·1 + nm·0 == x and x·0 + nm·1 == nm for finite x.
        return use_mask * mask_embedding + (1.0 - use_mask) * no_mask

    def _decode(
        self,
        image_embed: torch.Tensor,
        high_res_feats: tuple[torch.Tensor, torch.Tensor],
        sparse: torch.Tensor,
        dense: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """MaskDecoder.predict_masks with broadcasts in place of repeat_interleave; all four mask tokens."""
        decoder = self.mask_decoder
        prompt_count = sparse.shape[0]
        token_parts = [decoder.iou_token.weight, decoder.mask_tokens.weight]
        if decoder.pred_obj_scores:
            token_parts.insert(0, decoder.obj_score_token.weight)
        first = 1 if decoder.pred_obj_scores else 0
        output_tokens = torch.cat(token_parts, dim=0).unsqueeze(0).expand(prompt_count, -1, -1)
        tokens = torch.cat([output_tokens, sparse], dim=1)  # [B, T, C]

        src = image_embed + dense  # [1, C, h, w] + [B, C, h, w] → [B, C, h, w]
        # Python ints from the configuration, so the graph's output shapes are static past B.
        channels = self.prompt_encoder.embed_dim
        height, width = self.prompt_encoder.image_embedding_size
        mask_height, mask_width = self.prompt_encoder.mask_input_size  # 4× the embedding grid: 256 × 256
        # The transformer only adds image_pe to the keys: a batch of one broadcasts to every prompt.
        hs, src = decoder.transformer(src, self.image_pe, tokens)
        iou_token_out = hs[:, first, :]
        mask_tokens_out = hs[:, first + 1 : first + 1 + decoder.num_mask_tokens, :]  # [B, 4, C]

        src = src.transpose(1, 2).reshape(prompt_count, channels, height, width)
        upconv_1, norm_1, act_1, upconv_2, act_2 = decoder.output_upscaling
        feat_s0, feat_s1 = high_res_feats
        upscaled = act_1(norm_1(upconv_1(src) + feat_s1))
        upscaled = act_2(upconv_2(upscaled) + feat_s0)  # [B, C/8, 256, 256]

        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(decoder.output_hypernetworks_mlps)], dim=1
        )  # [B, 4, C/8]
        masks = hyper_in @ upscaled.reshape(prompt_count, channels // 8, mask_height * mask_width)
        masks = masks.reshape(
            prompt_count, decoder.num_mask_tokens, mask_height, mask_width
        )  # [B, 4, 256, 256]

        iou_predictions = decoder.iou_prediction_head(iou_token_out)  # [B, 4]
        if decoder.pred_obj_scores:
            object_score_logits = decoder.pred_obj_score_head(hs[:, 0, :])  # [B, 1]
        else:
            # sam2's default when the model has no object-score head: "object present" (sigmoid(10) ≈ 1).
            object_score_logits = 10.0 * torch.ones_like(iou_predictions[:, :1])
        return masks, iou_predictions, object_score_logits


def export_sam2_decoder(model: Sam2Model, path: Path) -> dict:
    """Export `model`'s prompt encoder + mask decoder to `path` (atomic) and measure parity against sam2.

    Returns {"inputs", "outputs"} (io_specs: names, shapes with symbolic dims, dtypes), "op_census",
    "export_seconds", "parity" {"batch_1": {output: max abs error}, "batch_7": {...}} measured with
    onnxruntime on seeded random features and mixed prompts (point-only and box prompts, negative clicks,
    mask input on every other prompt) against `reference_decoder_outputs`, and "parity_seconds".
    Raises RuntimeError (and removes the file) when the graph holds a forbidden op.
    """
    path = Path(path)
    wrapper = Sam2PromptDecoder(model.module).eval()
    # Two prompts of three points: no dimension of size 1 for the tracer to specialise on.
    example = {**random_features(seed=0), **random_prompts(2, 3, seed=0)}
    started = time.perf_counter()
    export_onnx(
        wrapper,
        tuple(torch.from_numpy(example[name]) for name in INPUT_NAMES),
        path,
        input_names=INPUT_NAMES,
        output_names=OUTPUT_NAMES,
        dynamic_axes=DYNAMIC_AXES,
    )
    export_seconds = time.perf_counter() - started
    census = op_census(path)
    if forbidden := forbidden_ops(census):
        path.unlink()
        raise RuntimeError(f"SAM2 decoder graph holds forbidden ops {forbidden}; nothing was written")
    started = time.perf_counter()
    parity = {f"batch_{count}": measure_parity(model, path, count) for count in EXPORT_PARITY_BATCHES}
    return {
        **io_specs(path),
        "opset": OPSET,
        "op_census": census,
        "export_seconds": round(export_seconds, 2),
        "parity": parity,
        "parity_inputs": PARITY_INPUTS,
        "parity_seconds": round(time.perf_counter() - started, 2),
    }


def measure_parity(
    model: Sam2Model, path: Path, prompt_count: int, point_count: int = 4, seed: int = 0
) -> dict[str, float]:
    """Max abs error per output between the graph at `path` (onnxruntime, CPU) and sam2's modules.

    Inputs: seeded random features and `random_prompts(prompt_count, point_count)`. Returns {name: float}.
    """
    import onnxruntime

    feeds = {**random_features(seed), **random_prompts(prompt_count, point_count, seed=seed + prompt_count)}
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    graph_outputs = dict(zip(OUTPUT_NAMES, session.run(OUTPUT_NAMES, feeds), strict=True))
    expected = reference_for_prompts(model, feeds, feeds)
    return {name: float(np.abs(graph_outputs[name] - expected[name]).max()) for name in OUTPUT_NAMES}


def reference_for_prompts(
    model: Sam2Model, features: Mapping[str, np.ndarray | torch.Tensor], prompts: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """`reference_decoder_outputs` for the graph's prompt feeds: `prompts` holds point_coords, point_labels,
    mask_input and has_mask_input as `random_prompts` returns them."""
    return reference_decoder_outputs(
        model,
        features,
        prompts["point_coords"],
        prompts["point_labels"],
        prompts["mask_input"],
        has_mask_input=prompts["has_mask_input"],
    )


def reference_decoder_outputs(
    model: Sam2Model,
    features: Mapping[str, np.ndarray | torch.Tensor],
    point_coords_1024: np.ndarray | torch.Tensor,
    point_labels: np.ndarray | torch.Tensor,
    mask_input: np.ndarray | torch.Tensor | None = None,
    *,
    has_mask_input: np.ndarray | torch.Tensor | None = None,
    chunk_size: int = 16,
) -> dict[str, np.ndarray]:
    """The graph's outputs computed by sam2's own modules, as SAM2ImagePredictor._predict calls them.

    features: "image_embed" [1, 256, 64, 64], "high_res_feats_0" [1, 32, 256, 256], "high_res_feats_1"
    [1, 64, 128, 128] (float32; or sam2's own {"image_embed", "high_res_feats": [s0, s1]}).
    point_coords_1024 float32 [B, P, 2], point_labels int [B, P]: the graph's prompt contract (box corners
    first, no trailing pad point: sam2's prompt encoder adds it, as in the predictor).
    mask_input float32 [B, 1, 256, 256] or None; has_mask_input [B] (0/1) picks which prompts use it
    (default: all of them when mask_input is given). sam2 embeds a mask for a whole call or for none, so the
    two groups go through sam2 separately, in chunks of `chunk_size` prompts to bound memory; each call
    repeats the image per prompt exactly when the predictor would (more than one prompt).
    Returns {"low_res_masks" [B, 4, 256, 256], "iou_predictions" [B, 4], "object_score_logits" [B, 1]},
    float32 numpy, all four mask tokens (sam2's multimask output is tokens 1..3).
    """
    coords = torch.as_tensor(np.asarray(point_coords_1024), dtype=torch.float32)
    labels = torch.as_tensor(np.asarray(point_labels), dtype=torch.int32)
    prompt_count = coords.shape[0]
    if has_mask_input is None:
        uses_mask = np.full(prompt_count, mask_input is not None)
    else:
        uses_mask = np.asarray(has_mask_input).reshape(prompt_count) > 0.5
    masks = None if mask_input is None else torch.as_tensor(np.asarray(mask_input), dtype=torch.float32)
    outputs = {
        "low_res_masks": np.zeros((prompt_count, 4, MASK_INPUT_SIZE, MASK_INPUT_SIZE), np.float32),
        "iou_predictions": np.zeros((prompt_count, 4), np.float32),
        "object_score_logits": np.zeros((prompt_count, 1), np.float32),
    }
    image_embed, high_res = _sam2_features(features)
    for group in (np.flatnonzero(uses_mask), np.flatnonzero(~uses_mask)):
        for start in range(0, len(group), chunk_size):
            rows = torch.from_numpy(group[start : start + chunk_size])
            chunk_masks = masks[rows] if uses_mask[int(rows[0])] else None
            results = _sam2_predict_masks(
                model.module, image_embed, high_res, coords[rows], labels[rows], chunk_masks
            )
            for name, value in zip(OUTPUT_NAMES, results, strict=True):
                outputs[name][rows.numpy()] = value.numpy()
    return outputs


def _sam2_features(features: Mapping) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(image_embed [1, 256, 64, 64], [high_res_feats_0, high_res_feats_1]) as float32 tensors."""
    if "high_res_feats" in features:
        levels = list(features["high_res_feats"])
    else:
        levels = [features["high_res_feats_0"], features["high_res_feats_1"]]
    return _float_tensor(features["image_embed"]), [_float_tensor(level) for level in levels]


def _float_tensor(value: np.ndarray | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(np.asarray(value), dtype=torch.float32)


def _sam2_predict_masks(sam2_base, image_embed, high_res, coords, labels, masks):
    """One sam2 call the way SAM2ImagePredictor._predict makes it: (masks, iou, object score) tensors."""
    prompt_encoder, mask_decoder = sam2_base.sam_prompt_encoder, sam2_base.sam_mask_decoder
    with torch.inference_mode():
        sparse, dense = prompt_encoder(points=(coords, labels), boxes=None, masks=masks)
        low_res_masks, iou_predictions, _, object_score_logits = mask_decoder.predict_masks(
            image_embeddings=image_embed,
            image_pe=prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            repeat_image=coords.shape[0] > 1,
            high_res_features=high_res,
        )
    return low_res_masks, iou_predictions, object_score_logits


def random_features(seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded standard-normal float32 encoder outputs of the graph's feature shapes, keyed by input name."""
    rng = np.random.default_rng(seed)
    shapes = {"image_embed": EMBED_SHAPE, "high_res_feats_0": HIGH_RES_SHAPES[0]}
    shapes["high_res_feats_1"] = HIGH_RES_SHAPES[1]
    return {name: rng.standard_normal(shape, dtype=np.float32) for name, shape in shapes.items()}


def random_prompts(
    prompt_count: int, point_count: int, seed: int = 0, *, boxes: bool = True, masks: bool = True
) -> dict[str, np.ndarray]:
    """Seeded mixed prompts in the graph's contract, keyed by input name.

    point_coords float32 [B, P, 2] uniform in the 1024 frame; point_labels int32 [B, P]: the first click of
    every prompt is positive, later ones are negative, positive or -1 padding at random; with `boxes` (and
    P ≥ 3) every odd prompt starts with a box (labels 2, 3, corners ordered). With `masks`, every even prompt
    has has_mask_input = 1 and a random mask_input of logit scale ~4; the others get zeros.
    """
    rng = np.random.default_rng(seed)
    coords = rng.uniform(0, INPUT_FRAME, (prompt_count, point_count, 2)).astype(np.float32)
    labels = rng.choice(np.array([-1, 0, 1], np.int32), (prompt_count, point_count))
    labels[:, 0] = 1
    if boxes and point_count >= 3:
        boxed = slice(1, None, 2)
        corners = np.sort(coords[boxed, :2, :], axis=1)  # (x0, y0) ≤ (x1, y1) per axis
        coords[boxed, :2, :] = corners
        labels[boxed, :2] = (2, 3)
        labels[boxed, 2] = 1
    has_mask = np.zeros(prompt_count, np.float32)
    mask_input = np.zeros((prompt_count, 1, MASK_INPUT_SIZE, MASK_INPUT_SIZE), np.float32)
    if masks:
        has_mask[::2] = 1.0
        mask_input[::2] = 4.0 * rng.standard_normal(mask_input[::2].shape, dtype=np.float32)
    return {
        "point_coords": coords,
        "point_labels": labels.astype(np.int32),
        "mask_input": mask_input,
        "has_mask_input": has_mask,
    }
