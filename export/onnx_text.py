"""CLIP's text tower → ONNX (`text_encoder.onnx`): BPE token ids in, L2-normalised text features out.

One row per prompt (template × query); the template mean and renormalisation happen outside the graph
(engine/text/encoder.py), exactly as `SclipModel.encode_queries` does them in torch. Both the prompt count N
and the sequence length L are symbolic: the runtime cuts a batch after its longest prompt's EOT token (the
tower is causal and read at EOT, so later positions never matter), as the torch side does; a full
[N, context_length] batch is accepted too. The read-out at the EOT token (the largest id in a row, open_clip's
`argmax` pooling) is ArgMax + a one-hot MatMul: exact (one 1.0, zeros elsewhere) and free of batch-indexed
Gathers. The attention is written out with an explicit causal mask (torch's fused multi-head-attention fast
path has no ONNX export).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from clipsam.engine.outputs import new_file_mode
from clipsam.engine.text.bank import OPENAI_IMAGENET_TEMPLATES
from clipsam.engine.text.tokenizer import VOCABULARY_FILE
from clipsam.export.clip_model import SclipModel
from clipsam.export.onnx_utils import export_onnx, graph_report

INPUT_NAME = "tokens"
OUTPUT_NAME = "text_features"
BATCH_DIM = "num_texts"
LENGTH_DIM = "text_length"
# Prompts of the export-time parity check: short and long words, punctuation, and one text that the
# tokenizer truncates to the full context (EOT forced into the last slot).
PARITY_WORDS = ("cat", "traffic light", "Stephen Curry", "a, b; c!")
PARITY_LONG_TEXT = "a photo of " + "tree " * 80
_TRACE_SHAPE = (3, 9)  # prompts, length: neither 1, so no size can be mistaken for a broadcast by the tracer


def _causal_attention(attn: nn.MultiheadAttention, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked self-attention with the weights of `attn`. x float32 [N, L, C], mask [L, L] additive (0 on and
    below the diagonal, -inf above) -> [N, L, C]."""
    width, heads = attn.embed_dim, attn.num_heads
    length = x.shape[1]
    qkv = torch.nn.functional.linear(x, attn.in_proj_weight, attn.in_proj_bias)  # [N, L, 3C]
    q, k, v = qkv.reshape(-1, length, 3, heads, width // heads).permute(2, 0, 3, 1, 4)  # [N, H, L, hd]
    scale = (width // heads) ** -0.5
    weights = torch.softmax((q * scale) @ k.transpose(-1, -2) + mask, dim=-1)  # [N, H, L, L]
    merged = (weights @ v).transpose(1, 2).reshape(-1, length, width)  # [N, L, C]
    return attn.out_proj(merged)


class TextTowerGraph(nn.Module):
    """Trace-friendly CLIP text tower.

    tokens int32 [N, L] (L <= context_length, each row SOT ... EOT then zeros) -> text_features float32
    [N, D], L2-normalised; equal to `F.normalize(SclipModel.encode_text_tokens(tokens), dim=-1)`.
    """

    def __init__(self, model: SclipModel):
        super().__init__()
        clip = model.clip
        self.clip = clip
        context = clip.positional_embedding.shape[0]
        causal = torch.full((context, context), float("-inf")).triu_(1)
        self.register_buffer("causal_mask", causal, persistent=False)  # [ctx, ctx]
        self.register_buffer("positions", torch.arange(context), persistent=False)  # [ctx] int64

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        clip = self.clip
        length = tokens.shape[1]
        x = clip.token_embedding(tokens.long()) + clip.positional_embedding[:length]  # [N, L, W]
        mask = self.causal_mask[:length, :length]
        for block in clip.transformer.resblocks:
            x = x + block.ls_1(_causal_attention(block.attn, block.ln_1(x), mask))
            x = x + block.ls_2(block.mlp(block.ln_2(x)))
        eot = tokens.argmax(dim=-1)  # [N]: the EOT token has the largest id
        one_hot = (self.positions[:length].unsqueeze(0) == eot.unsqueeze(1)).to(x.dtype)  # [N, L]
        pooled = clip.ln_final((one_hot.unsqueeze(1) @ x).squeeze(1))  # [N, W]; ln_final acts per token
        projection = clip.text_projection
        features = projection(pooled) if isinstance(projection, nn.Linear) else pooled @ projection  # [N, D]
        norms = torch.linalg.vector_norm(features, dim=-1, keepdim=True)  # [N, 1]
        return features / norms.clamp_min(1e-12)  # F.normalize, without its Shape/Expand pair


def parity_prompts() -> list[str]:
    """The short prompts of the export-time parity check: a few templates filled with PARITY_WORDS."""
    return [template.format(word) for word in PARITY_WORDS for template in OPENAI_IMAGENET_TEMPLATES[:4]]


def reference_text_features(model: SclipModel, tokens: torch.Tensor) -> np.ndarray:
    """The torch side: open_clip's encode path (`encode_text_tokens`), L2-normalised. float32 [N, D]."""
    with torch.inference_mode():
        return torch.nn.functional.normalize(model.encode_text_tokens(tokens), dim=-1).numpy()


def measure_text_parity(model: SclipModel, path: Path | str) -> dict[str, float]:
    """Max abs error of `text_features` (onnxruntime, CPU) against the torch encoder: `parity_prompts` cut
    after their longest EOT (how the runtime feeds them), and with PARITY_LONG_TEXT at the full context."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    short = model.tokenize(parity_prompts())  # int64 [N, ctx]
    cut = int(short.argmax(dim=-1).max()) + 1
    full = torch.cat([short, model.tokenize([PARITY_LONG_TEXT])])  # [N + 1, ctx]
    parity = {}
    for fed in (short[:, :cut], full):
        (exported,) = session.run([OUTPUT_NAME], {INPUT_NAME: fed.numpy().astype(np.int32)})
        error = np.abs(exported - reference_text_features(model, fed)).max()
        parity[f"{OUTPUT_NAME}[N={fed.shape[0]},L={fed.shape[1]}]"] = float(error)
    return parity


def export_text_encoder(model: SclipModel, path: Path | str) -> dict[str, Any]:
    """Export CLIP's text tower to ONNX at `path` (atomic) and check it against the torch encoder.

    Graph: input `tokens` int32 [num_texts, text_length] (text_length <= context length); output
    `text_features` float32 [num_texts, embed_dim], L2-normalised.
    Returns {"io_specs", "op_census", "forbidden_ops", "parity", "export_seconds", "opset",
    "context_length", "embed_dim"}.
    """
    graph = TextTowerGraph(model).eval()
    trace_tokens = torch.randint(1, 1000, _TRACE_SHAPE, generator=torch.Generator().manual_seed(0))
    trace_tokens[:, -1] = model.clip.vocab_size - 1  # an EOT-like largest id closes each row
    started = time.perf_counter()
    export_onnx(
        graph,
        (trace_tokens.to(torch.int32),),
        path,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_axes={INPUT_NAME: {0: BATCH_DIM, 1: LENGTH_DIM}, OUTPUT_NAME: {0: BATCH_DIM}},
    )
    return {
        **graph_report(path, time.perf_counter() - started),
        "parity": measure_text_parity(model, path),
        "context_length": int(model.clip.positional_embedding.shape[0]),
        "embed_dim": model.embed_dim,
    }


def open_clip_vocabulary_file() -> Path:
    """The BPE merges file of the installed open_clip (`bpe_simple_vocab_16e6.txt.gz`)."""
    from open_clip.tokenizer import default_bpe

    return Path(default_bpe())


def copy_vocabulary_file(folder: Path) -> Path:
    """Copy open_clip's BPE merges file into `folder` (atomic: temp file + rename); returns the copy."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / VOCABULARY_FILE
    handle, tmp_name = tempfile.mkstemp(prefix=f".{VOCABULARY_FILE}.", suffix=".tmp", dir=folder)
    os.close(handle)
    try:
        shutil.copyfile(open_clip_vocabulary_file(), tmp_name)
        os.chmod(tmp_name, new_file_mode())
        os.replace(tmp_name, target)
    finally:
        Path(tmp_name).unlink(missing_ok=True)
    return target
