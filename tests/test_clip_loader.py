"""The CLIP loader: architecture inference, OpenAI / open_clip / TorchScript formats, strict checks, random
mode, and the truncated text encoder against open_clip's own."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from clipsam.engine.errors import CheckpointError
from clipsam.export.clip_model import (
    ClipArch,
    arch_from_open_clip_name,
    arch_from_state_dict,
    load_sclip,
    read_clip_checkpoint,
)

TINY_ARCH = ClipArch(
    embed_dim=64,
    image_size=224,
    patch_size=16,
    vision_width=128,
    vision_layers=3,
    context_length=77,
    vocab_size=49408,
    text_width=128,
    text_layers=2,
)


@pytest.fixture(scope="module")
def tiny(tiny_clip_checkpoint: Path):
    return load_sclip(tiny_clip_checkpoint)


@pytest.fixture(scope="module")
def tiny_crops() -> torch.Tensor:
    return torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))


def _tokens_out(model, crops: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.dense_tokens(crops)


def test_tiny_arch_is_inferred_from_keys(tiny, tiny_clip_checkpoint: Path) -> None:
    assert tiny.arch == TINY_ARCH
    assert (tiny.image_size, tiny.patch_size, tiny.embed_dim) == (224, 16, 64)
    assert tiny.clip.visual.transformer.resblocks[0].attn.num_heads == 2  # width // 64
    assert tiny.random_weights is False and len(tiny.weights_id) == 64
    assert read_clip_checkpoint(tiny_clip_checkpoint)[1] == "openai"


def test_open_clip_checkpoint_wrapped_and_prefixed(tmp_path: Path, tiny, tiny_crops) -> None:
    state = {f"module.{k}": v.float() for k, v in tiny.clip.state_dict().items()}
    path = tmp_path / "open_clip_epoch_1.pt"
    torch.save({"epoch": 1, "state_dict": state}, path)
    assert read_clip_checkpoint(path)[1] == "open_clip"
    loaded = load_sclip(path)
    assert loaded.arch == TINY_ARCH and loaded.weights_id != tiny.weights_id
    torch.testing.assert_close(_tokens_out(loaded, tiny_crops), _tokens_out(tiny, tiny_crops), rtol=0, atol=0)


def test_openai_metadata_keys_are_accepted(tmp_path: Path, tiny, tiny_crops) -> None:
    state = {k: v.half() for k, v in tiny.clip.state_dict().items()}
    state.update(
        input_resolution=torch.tensor(224), context_length=torch.tensor(77), vocab_size=torch.tensor(49408)
    )
    path = tmp_path / "openai.pt"
    torch.save(state, path)
    torch.testing.assert_close(_tokens_out(load_sclip(path), tiny_crops), _tokens_out(tiny, tiny_crops))


def test_torchscript_archive_as_openai_ships_it(tmp_path: Path, tiny, tiny_crops) -> None:
    path = tmp_path / "jit.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of torch.export
        traced = torch.jit.trace_module(tiny.clip, {"encode_text": (torch.zeros(1, 77, dtype=torch.long),)})
        torch.jit.save(traced, str(path))
    assert read_clip_checkpoint(path)[1] == "openai-torchscript"
    loaded = load_sclip(path)
    assert loaded.arch == TINY_ARCH
    torch.testing.assert_close(_tokens_out(loaded, tiny_crops), _tokens_out(tiny, tiny_crops), rtol=0, atol=0)


def test_inconsistent_checkpoint_fails_naming_the_file(tmp_path: Path, tiny) -> None:
    state = dict(tiny.clip.state_dict())
    state["visual.ln_post.weight"] = torch.ones(96)  # width 128 elsewhere
    del state["ln_final.bias"]
    path = tmp_path / "broken.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"broken\.pt.*1 shape mismatches.*1 missing keys"):
        load_sclip(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        (b"", "is empty"),
        (b"not a torch file", "corrupt"),
        ({"w": 1}, "not a ViT CLIP"),
    ],
)
def test_bad_files_fail_with_one_line(tmp_path: Path, content, message: str) -> None:
    path = tmp_path / "clip.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, dict):
        torch.save({k: torch.tensor(v) for k, v in content.items()}, path)
    with pytest.raises(CheckpointError, match=message) as caught:
        load_sclip(path)
    assert "\n" not in str(caught.value)


def test_no_checkpoint_without_random_weights() -> None:
    with pytest.raises(CheckpointError, match="random weights"):
        load_sclip(None)


@pytest.mark.slow
def test_vit_b16_random_roundtrip_and_mismatch(tiny_clip_checkpoint: Path) -> None:
    """The one full-size test: the real ViT-B-16 in random mode, re-read from an OpenAI-format state dict,
    and a tiny checkpoint refused for it."""
    expected = arch_from_open_clip_name("ViT-B-16")
    assert (expected.vision_width, expected.vision_layers, expected.text_width, expected.embed_dim) == (
        768, 12, 512, 512,
    )  # fmt: skip
    model = load_sclip(None, random_weights=True, seed=3)
    assert model.arch == expected and model.random_weights
    assert model.weights_id == "random-init:ViT-B-16:seed=3"
    assert model.clip.visual.transformer.resblocks[0].attn.num_heads == 12
    assert model.clip.transformer.resblocks[0].attn.num_heads == 8
    state = {k: v.half() for k, v in model.clip.state_dict().items()}
    state.update(
        input_resolution=torch.tensor(224), context_length=torch.tensor(77), vocab_size=torch.tensor(49408)
    )
    assert arch_from_state_dict(state, "ViT-B-16.pt") == expected
    with pytest.raises(CheckpointError, match=r"sclip_tiny_openai_format\.pt.*ViT-B-16.*shape mismatches"):
        load_sclip(tiny_clip_checkpoint, arch="ViT-B-16")


def test_random_mode_is_seeded_and_leaves_global_rng_alone() -> None:
    before = torch.random.get_rng_state()
    first = load_sclip(None, random_weights=True, seed=5, arch="ViT-S-16")
    again = load_sclip(None, random_weights=True, seed=5, arch="ViT-S-16")
    other = load_sclip(None, random_weights=True, seed=6, arch="ViT-S-16")
    assert torch.equal(torch.random.get_rng_state(), before)
    assert first.weights_id == "random-init:ViT-S-16:seed=5"
    assert torch.equal(first.clip.visual.proj, again.clip.visual.proj)
    assert not torch.equal(first.clip.visual.proj, other.clip.visual.proj)


def test_truncated_text_encoder_equals_open_clip(tiny) -> None:
    texts = ["a", "a photo of a cat.", "a jpeg corrupted photo of the chest of drawers in a video game.", ""]
    tokens = tiny.tokenize(texts)
    assert int(tokens.argmax(dim=-1).max()) + 1 < 77  # the fast path really truncates
    with torch.no_grad():
        fast = tiny.encode_text_tokens(tokens)
        reference = tiny.clip.encode_text(tokens)
    torch.testing.assert_close(fast, reference, rtol=0, atol=1e-5)


def test_encode_queries_equals_the_full_length_ensemble(tiny) -> None:
    templates = ("a photo of a {}.", "itap of the {}.", "a {} in a video game.")
    queries = ["cat", "traffic light", "chest of drawers"]
    with torch.no_grad():
        fast = tiny.encode_queries(queries, templates=templates)
        full = tiny.clip.encode_text(tiny.tokenize([t.format(q) for q in queries for t in templates]))
    full = torch.nn.functional.normalize(full, dim=-1).view(3, 3, -1).mean(dim=1)
    torch.testing.assert_close(fast, torch.nn.functional.normalize(full, dim=-1), rtol=0, atol=1e-5)
    torch.testing.assert_close(fast.norm(dim=-1), torch.ones(3))


def test_non_square_crop_interpolates_positions(tiny) -> None:
    crops = torch.randn(1, 3, 160, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        features = tiny.encode_crops(crops)
    assert features.shape == (1, 10 * 14, 64)
    torch.testing.assert_close(features.norm(dim=-1), torch.ones(1, 140))
