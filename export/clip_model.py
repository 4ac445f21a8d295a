"""SCLIP's CLIP: load an OpenAI-format or open_clip ViT checkpoint (architecture read from the keys), or build
the real architecture with seeded random weights, and run it the SCLIP way.

SCLIP changes only the last vision block at inference: its attention becomes correlative self-attention
(CSA), `softmax(q qᵀ s) + softmax(k kᵀ s)` with the block's own projections, residual and MLP kept. The CLS
token stays in the sequence; dense features are `ln_post(tokens) @ proj`.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
from open_clip.tokenizer import SimpleTokenizer

from clipsam.engine.errors import CheckpointError
from clipsam.engine.text.bank import OPENAI_IMAGENET_TEMPLATES
from clipsam.export.checkpoints import (
    LOAD_ERRORS,
    check_keys_and_shapes,
    file_sha256,
    is_torchscript_archive,
    load_checkpoint,
)

# Entries of OpenAI's state dicts that are metadata, not weights.
OPENAI_METADATA_KEYS = ("input_resolution", "context_length", "vocab_size")
# Also never weights: the text causal mask, which traced TorchScript files store as a buffer.
_NON_WEIGHT_KEYS = (*OPENAI_METADATA_KEYS, "attn_mask")
_HEAD_WIDTH = 64  # OpenAI CLIP: heads = width // 64 in both towers
_TEXT_BATCH = 256  # prompts per text-encoder call


@dataclass(frozen=True)
class ClipArch:
    """A ViT CLIP architecture (OpenAI layout, QuickGELU)."""

    embed_dim: int
    image_size: int
    patch_size: int
    vision_width: int
    vision_layers: int
    context_length: int
    vocab_size: int
    text_width: int
    text_layers: int

    def describe(self) -> str:
        return (
            f"ViT CLIP embed {self.embed_dim}, vision {self.image_size}px/{self.patch_size} "
            f"width {self.vision_width} x{self.vision_layers}, text ctx {self.context_length} "
            f"width {self.text_width} x{self.text_layers}"
        )

    def build(self) -> CLIP:
        """The open_clip `CLIP` of this architecture (float32, eval), with open_clip's initialisation."""
        vision_cfg = CLIPVisionCfg(
            layers=self.vision_layers,
            width=self.vision_width,
            head_width=_HEAD_WIDTH,
            patch_size=self.patch_size,
            image_size=self.image_size,
        )
        text_cfg = CLIPTextCfg(
            context_length=self.context_length,
            vocab_size=self.vocab_size,
            width=self.text_width,
            heads=self.text_width // _HEAD_WIDTH,
            layers=self.text_layers,
        )
        return CLIP(self.embed_dim, vision_cfg=vision_cfg, text_cfg=text_cfg, quick_gelu=True).eval()


def arch_from_open_clip_name(name: str) -> ClipArch:
    """The architecture of an open_clip config, e.g. "ViT-B-16" (built as OpenAI's QuickGELU variant)."""
    config = open_clip.get_model_config(name)
    if config is None or "layers" not in config.get("vision_cfg", {}):
        raise CheckpointError(f"unknown CLIP architecture '{name}' (try ViT-B-16)")
    vision, text = config["vision_cfg"], config["text_cfg"]
    if not isinstance(vision["layers"], int) or text.get("heads", text["width"] // 64) != text["width"] // 64:
        raise CheckpointError(f"CLIP architecture '{name}' is not an OpenAI-style ViT CLIP")
    return ClipArch(
        embed_dim=config["embed_dim"],
        image_size=vision["image_size"],
        patch_size=vision["patch_size"],
        vision_width=vision["width"],
        vision_layers=vision["layers"],
        context_length=text["context_length"],
        vocab_size=text["vocab_size"],
        text_width=text["width"],
        text_layers=text["layers"],
    )


def arch_from_state_dict(state: dict[str, torch.Tensor], path: Path | str) -> ClipArch:
    """Infer the architecture from an OpenAI / open_clip ViT CLIP state dict's keys and shapes."""
    needed = ("visual.proj", "visual.conv1.weight", "visual.positional_embedding", "text_projection",
              "positional_embedding", "token_embedding.weight", "ln_final.weight")  # fmt: skip
    absent = [key for key in needed if key not in state]
    if absent:
        raise CheckpointError(
            f"checkpoint '{path}' is not a ViT CLIP checkpoint in OpenAI/open_clip layout (no '{absent[0]}')"
        )
    conv = state["visual.conv1.weight"]  # [width, 3, patch, patch]
    grid = round(math.sqrt(state["visual.positional_embedding"].shape[0] - 1))
    return ClipArch(
        embed_dim=int(state["text_projection"].shape[1]),
        image_size=int(conv.shape[-1]) * grid,
        patch_size=int(conv.shape[-1]),
        vision_width=int(conv.shape[0]),
        vision_layers=_count_blocks(state, "visual.transformer.resblocks."),
        context_length=int(state["positional_embedding"].shape[0]),
        vocab_size=int(state["token_embedding.weight"].shape[0]),
        text_width=int(state["ln_final.weight"].shape[0]),
        text_layers=_count_blocks(state, "transformer.resblocks."),
    )


def _count_blocks(state: dict[str, torch.Tensor], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({match.group(1) for key in state if (match := pattern.match(key))})


def read_clip_checkpoint(path: Path | str) -> tuple[dict[str, torch.Tensor], str]:
    """Read a CLIP checkpoint as a float32 state dict without OpenAI's metadata entries.

    Accepts OpenAI's released files (TorchScript archives, e.g. ViT-B-16.pt), OpenAI-layout state dicts and
    open_clip checkpoints (same key names, possibly under "state_dict" / with "module." prefixes).
    Returns (state, format) with format "openai-torchscript", "openai" (fp16 or metadata keys) or "open_clip".
    """
    path = Path(path)
    if _is_torchscript_archive(path):
        state, fmt = _read_torchscript(path), "openai-torchscript"
    else:
        state = load_checkpoint(path, "CLIP")
        is_openai = any(k in state for k in OPENAI_METADATA_KEYS) or any(
            v.dtype == torch.float16 for v in state.values()
        )
        fmt = "openai" if is_openai else "open_clip"
    weights = {
        key: value.float() if value.is_floating_point() else value
        for key, value in state.items()
        if key not in _NON_WEIGHT_KEYS
    }
    return weights, fmt


def _is_torchscript_archive(path: Path) -> bool:
    return is_torchscript_archive(path)  # a damaged zip is not one: torch.load then reports it as corrupt


def _read_torchscript(path: Path) -> dict[str, torch.Tensor]:
    # OpenAI ships CLIP as TorchScript, which torch.load(weights_only=True) refuses; torch.jit.load reads it
    # without unpickling arbitrary Python objects. Only the weights are kept.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "torch.jit is deprecated": noise for a reader
            module = torch.jit.load(str(path), map_location="cpu")
    except LOAD_ERRORS as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"CLIP checkpoint '{path}' is a corrupt TorchScript archive ({first_line})"
        ) from err
    return dict(module.state_dict())


def correlative_self_attention(
    attn: torch.nn.MultiheadAttention, x: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """SCLIP's CSA with the weights of `attn`. x: float32 [N, T, C] (batch first) -> [N, T, C].

    A = softmax(q qᵀ · s + M) + softmax(k kᵀ · s + M), s = head_dim^-0.5; output = out_proj(A v).
    bias: M, float32 [N, 1, T, T] (0 or -inf, see `region_attention_bias`); None = SCLIP's CSA (no M).
    """
    batch, tokens, width = x.shape
    heads = attn.num_heads
    head_dim = width // heads
    scale = head_dim**-0.5
    qkv = F.linear(x, attn.in_proj_weight, attn.in_proj_bias)  # [N, T, 3C]
    q, k, v = qkv.view(batch, tokens, 3, heads, head_dim).permute(2, 0, 3, 1, 4)  # each [N, H, T, hd]
    q_logits, k_logits = q @ q.transpose(-1, -2) * scale, k @ k.transpose(-1, -2) * scale  # [N, H, T, T]
    if bias is not None:
        q_logits, k_logits = q_logits + bias, k_logits + bias
    weights = torch.softmax(q_logits, dim=-1) + torch.softmax(k_logits, dim=-1)  # [N, H, T, T]
    out = (weights @ v).transpose(1, 2).reshape(batch, tokens, width)  # [N, T, C]
    return attn.out_proj(out)


def region_attention_bias(patch_regions: torch.Tensor) -> torch.Tensor:
    """Issue 26's mask M: patch_regions int [N, L] (0 = no region) -> float32 [N, 1, 1 + L, 1 + L], CLS first.

    M[i, j] = 0 when tokens i and j share a non-zero region or either is in region 0 (the CLS token counts as
    region 0: it attends and is attended as in SCLIP), -inf otherwise: log of the allowed pattern, exactly.
    """
    ids = torch.cat([patch_regions[:, :1] * 0, patch_regions], dim=1)  # [N, 1 + L], CLS = 0
    free = ids == 0
    allowed = (ids[:, :, None] == ids[:, None, :]) | free[:, :, None] | free[:, None, :]  # [N, T, T]
    return torch.log(allowed.to(torch.float32))[:, None]


class SclipModel(torch.nn.Module):
    """A CLIP run the SCLIP way. Crops are float32 [N, 3, S, S] normalised with CLIP's mean/std (RGB)."""

    def __init__(self, clip: CLIP, weights_id: str, random_weights: bool, arch: ClipArch):
        super().__init__()
        assert clip.visual.transformer.batch_first and clip.visual.attn_pool is None
        self.clip = clip.eval()
        self.weights_id = weights_id
        self.random_weights = random_weights
        self.arch = arch
        self.image_size = arch.image_size
        self.patch_size = arch.patch_size
        self.embed_dim = arch.embed_dim
        self._tokenizer: SimpleTokenizer | None = None

    # --- vision -------------------------------------------------------------------------------------------
    def _positional_embedding(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """[1 + grid_h * grid_w, C]; interpolated bicubically for another grid, as SCLIP does (its scale
        factor (g + 0.1) / g0, passed to interpolate as a factor, not a size)."""
        table = self.clip.visual.positional_embedding  # [1 + g0², C]
        grid0 = round(math.sqrt(table.shape[0] - 1))
        if (grid_h, grid_w) == (grid0, grid0):
            return table
        patch_table = table[1:].reshape(1, grid0, grid0, -1).permute(0, 3, 1, 2)  # [1, C, g0, g0]
        factors = ((grid_h + 0.1) / grid0, (grid_w + 0.1) / grid0)
        patch_table = F.interpolate(patch_table, scale_factor=factors, mode="bicubic")
        assert tuple(patch_table.shape[-2:]) == (grid_h, grid_w), patch_table.shape
        return torch.cat([table[:1], patch_table.permute(0, 2, 3, 1).reshape(grid_h * grid_w, -1)])

    def dense_tokens(self, crops: torch.Tensor, patch_regions: torch.Tensor | None = None) -> torch.Tensor:
        """crops float32 [N, 3, H, W] -> [N, 1 + L, D] final tokens (CLS first), CSA in the last block,
        after ln_post and proj, not normalised. L = (H // patch) * (W // patch), row-major patch order.
        patch_regions: int [N, L] region id of each patch (issue 26): the CSA is restricted to regions."""
        visual = self.clip.visual
        patches = visual.conv1(crops)  # [N, C, gh, gw]
        grid_h, grid_w = patches.shape[-2:]
        x = patches.flatten(2).transpose(1, 2)  # [N, L, C]
        cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self._positional_embedding(grid_h, grid_w).to(x.dtype)
        x = visual.ln_pre(x)
        *blocks, last = visual.transformer.resblocks
        for block in blocks:
            x = block(x)
        bias = None if patch_regions is None else region_attention_bias(patch_regions)
        x = x + last.ls_1(correlative_self_attention(last.attn, last.ln_1(x), bias))
        x = x + last.ls_2(last.mlp(last.ln_2(x)))
        return visual.ln_post(x) @ visual.proj  # [N, 1 + L, D]

    def encode_crops(self, crops: torch.Tensor) -> torch.Tensor:
        """crops float32 [N, 3, H, W] -> L2-normalised patch features [N, L, D] (CLS dropped)."""
        return F.normalize(self.dense_tokens(crops), dim=-1)[:, 1:]

    def encode_crops_with_regions(self, crops: torch.Tensor, patch_regions: torch.Tensor) -> torch.Tensor:
        """`encode_crops` with region-restricted CSA: patch_regions int [N, L] -> [N, L, D] (issue 26)."""
        return F.normalize(self.dense_tokens(crops, patch_regions), dim=-1)[:, 1:]

    # --- text ---------------------------------------------------------------------------------------------
    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """int64 [B, context_length] BPE tokens (open_clip's bundled OpenAI vocabulary), EOT-terminated."""
        if self._tokenizer is None:
            self._tokenizer = SimpleTokenizer(context_length=self.clip.context_length)
        return self._tokenizer(texts)

    def encode_text_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens int64 [B, ctx] -> [B, D] text features (not normalised), equal to open_clip's `encode_text`.

        The text tower is causal and read at the EOT token (the largest id), so tokens after the batch's last
        EOT never influence the result: the sequences are cut there.
        """
        clip = self.clip
        eot = tokens.argmax(dim=-1)  # [B]
        length = int(eot.max()) + 1
        x = clip.token_embedding(tokens[:, :length]) + clip.positional_embedding[:length]  # [B, length, W]
        x = clip.transformer(x, attn_mask=clip.attn_mask[:length, :length])
        x = clip.ln_final(x)[torch.arange(x.shape[0], device=x.device), eot]  # [B, W]
        projection = clip.text_projection
        return projection(x) if isinstance(projection, torch.nn.Linear) else x @ projection

    def encode_queries(
        self, queries: Sequence[str], templates: Sequence[str] = OPENAI_IMAGENET_TEMPLATES
    ) -> torch.Tensor:
        """Q query words -> float32 [Q, D]: each template filled, encoded, normalised; mean; normalised."""
        prompts = [template.format(query) for query in queries for template in templates]
        device = self.clip.positional_embedding.device
        tokens = self.tokenize(prompts).to(device)  # [Q*T, ctx]
        # Similar lengths share a batch, so each batch is cut short (order restored afterwards).
        order = torch.argsort(tokens.argmax(dim=-1))
        features = torch.empty(len(prompts), self.embed_dim, device=device)
        for chunk in order.split(_TEXT_BATCH):
            features[chunk] = self.encode_text_tokens(tokens[chunk])
        features = F.normalize(features, dim=-1).view(len(queries), len(templates), -1).mean(dim=1)
        return F.normalize(features, dim=-1)


def load_sclip(
    checkpoint: Path | str | None,
    *,
    random_weights: bool = False,
    seed: int = 0,
    arch: str | None = None,
) -> SclipModel:
    """Build SCLIP's CLIP (float32, eval, CPU).

    checkpoint: OpenAI-format (TorchScript or state dict) or open_clip file; the architecture is inferred
        from its keys. If `arch` (open_clip name) is also given, the file must match it exactly.
    random_weights: ignore `checkpoint` and build `arch` (default "ViT-B-16") seeded with `seed`.
    Raises CheckpointError (one line) for a missing, corrupt or mismatching checkpoint.
    """
    if random_weights:
        name = arch or "ViT-B-16"
        clip_arch = arch_from_open_clip_name(name)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            clip = clip_arch.build()
        return SclipModel(clip, f"random-init:{name}:seed={seed}", True, clip_arch)
    if checkpoint is None:
        raise CheckpointError(
            "no CLIP checkpoint given: pass one (see `clipsam download`) or use random weights"
        )
    state, _ = read_clip_checkpoint(checkpoint)
    clip_arch = arch_from_open_clip_name(arch) if arch else arch_from_state_dict(state, checkpoint)
    clip = _build_for_weights(clip_arch)
    check_keys_and_shapes(state, clip, checkpoint, arch or clip_arch.describe())
    clip.load_state_dict(state, strict=True, assign=True)
    _restore_causal_mask(clip)
    return SclipModel(clip, file_sha256(Path(checkpoint)), False, clip_arch)


def _build_for_weights(clip_arch: ClipArch) -> CLIP:
    # On the meta device: the random initialisation that the checkpoint overwrites anyway is skipped
    # (seconds of CPU for ViT-B/16); the weights are then assigned, not copied.
    with torch.device("meta"):
        return clip_arch.build()


def _restore_causal_mask(clip: CLIP) -> None:
    """The text tower's causal mask is a non-persistent buffer, so no checkpoint holds it: rebuild it."""
    context = clip.context_length
    clip.attn_mask = torch.full((context, context), float("-inf")).triu_(1)
    on_meta = [name for name, t in [*clip.named_parameters(), *clip.named_buffers()] if t.is_meta]
    assert not on_meta, f"tensors left without weights: {on_meta[:3]}"
