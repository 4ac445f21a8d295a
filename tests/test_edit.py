"""Generative edits (engine/edit/inpaint.py, engine/edit/mask.py) with a tiny randomly initialised SD
inpainting pipeline: no files, no network (prompt embeddings are given directly, so no tokenizer or text
encoder)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from clipsam.engine.edit import inpaint as edit
from clipsam.engine.edit.mask import dilate, feather, paste_back, plan_region, work_size
from clipsam.engine.errors import ClipsamError

HEIGHT, WIDTH = 52, 76  # not multiples of 8, so the work-size round trip is exercised
FAST = {"steps": 2, "max_side": 64, "dilate_px": 3, "feather_px": 2}


@pytest.fixture(scope="module")
def tiny_pipeline():
    return edit.random_inpaint_pipeline(seed=0)


@pytest.fixture(scope="module")
def scene() -> tuple[np.ndarray, np.ndarray]:
    """uint8 [H, W, 3] noise picture and a bool [H, W] target touching the right border."""
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    target = np.zeros((HEIGHT, WIDTH), dtype=bool)
    target[14:34, 50:] = True
    return image, target


def _edit(pipeline, scene, seed: int = 0, mode: str = "replace", progress=None) -> np.ndarray:
    image, target = scene
    prompt = "a red sunset sky" if mode == "replace" else None
    return edit.inpaint_edit(
        image,
        target,
        mode=mode,
        edit_prompt=prompt,
        options=edit.InpaintOptions(seed=seed, **FAST),
        progress=progress,
        pipeline=pipeline,
        prompt_embeds=edit.random_prompt_embeddings(pipeline, prompt or "", seed=0),
    )


@pytest.fixture(scope="module")
def edited_seed0(tiny_pipeline, scene) -> np.ndarray:
    return _edit(tiny_pipeline, scene, seed=0)


def test_edit_keeps_size_and_outside_pixels_and_changes_inside(edited_seed0, scene):
    image, target = scene
    grown = dilate(target, FAST["dilate_px"])
    assert edited_seed0.shape == image.shape and edited_seed0.dtype == np.uint8
    np.testing.assert_array_equal(edited_seed0[~grown], image[~grown])
    changed = (edited_seed0 != image).any(axis=-1)
    assert changed[target].mean() > 0.9


def test_same_seed_repeats_and_other_seed_differs(tiny_pipeline, scene, edited_seed0):
    np.testing.assert_array_equal(_edit(tiny_pipeline, scene, seed=0), edited_seed0)
    assert (_edit(tiny_pipeline, scene, seed=1) != edited_seed0).any()


def test_remove_mode_and_progress_over_denoising_steps(tiny_pipeline, scene):
    calls: list[tuple[int, int]] = []
    image, target = scene
    removed = _edit(
        tiny_pipeline, scene, mode="remove", progress=lambda step, total: calls.append((step, total))
    )
    assert calls == [(1, 2), (2, 2)]
    grown = dilate(target, FAST["dilate_px"])
    np.testing.assert_array_equal(removed[~grown], image[~grown])
    assert (removed[target] != image[target]).any()


def _attach_tiny_text_encoder(pipeline, folder):
    """A character-level CLIP tokenizer (files written to `folder`) and a random 2-layer CLIP text model."""
    import json

    import torch
    import transformers

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for letter in map(chr, range(ord("a"), ord("z") + 1)):
        vocab[letter] = len(vocab)
        vocab[letter + "</w>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = transformers.CLIPTokenizer(
        str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77
    )
    config = transformers.CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=pipeline.unet.config.cross_attention_dim,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    torch.manual_seed(0)
    pipeline.register_modules(text_encoder=transformers.CLIPTextModel(config).eval(), tokenizer=tokenizer)
    return pipeline


@pytest.mark.parametrize(("mode", "prompt"), [("replace", "a red sunset sky"), ("remove", None)])
def test_real_path_encodes_the_prompt_text(scene, tmp_path, mode, prompt):
    image, target = scene
    pipeline = _attach_tiny_text_encoder(edit.random_inpaint_pipeline(seed=0), tmp_path)
    options = edit.InpaintOptions(**FAST)
    out = edit.inpaint_edit(image, target, mode=mode, edit_prompt=prompt, options=options, pipeline=pipeline)
    grown = dilate(target, FAST["dilate_px"])
    np.testing.assert_array_equal(out[~grown], image[~grown])
    assert (out[target] != image[target]).any()


def test_empty_target_returns_the_image_without_loading_a_model(scene):
    image, _ = scene
    options = edit.InpaintOptions(model="/nonexistent/inpaint-model", **FAST)
    empty = np.zeros(image.shape[:2], dtype=bool)
    out = edit.inpaint_edit(image, empty, mode="remove", edit_prompt=None, options=options)
    np.testing.assert_array_equal(out, image)


def test_pipeline_without_text_encoder_needs_embeddings(tiny_pipeline, scene):
    image, target = scene
    with pytest.raises(ClipsamError, match="prompt embeddings"):
        edit.inpaint_edit(
            image,
            target,
            mode="remove",
            edit_prompt=None,
            options=edit.InpaintOptions(**FAST),
            pipeline=tiny_pipeline,
        )


@pytest.mark.parametrize("prompt", [None, "", "   "])
def test_replace_without_edit_prompt_is_one_line_error(scene, prompt):
    image, target = scene
    with pytest.raises(ClipsamError, match="--edit-prompt") as info:
        edit.inpaint_edit(image, target, mode="replace", edit_prompt=prompt, options=edit.InpaintOptions())
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "flag"),
    [
        ({"steps": 0}, "--steps"),
        ({"guidance_scale": -1.0}, "--guidance-scale"),
        ({"strength": 0.0}, "--strength"),
        ({"strength": 1.5}, "--strength"),
        ({"strength": 0.1, "steps": 5}, "--strength"),
        ({"max_side": 500}, "multiple of 8"),
        ({"device": "tpu"}, "--device"),
        ({"model": " "}, "--inpaint-model"),
    ],
)
def test_invalid_options_are_one_line_errors(kwargs, flag):
    with pytest.raises(ClipsamError, match=flag) as info:
        edit.InpaintOptions(**kwargs)
    assert "\n" not in str(info.value)


def _load_error(monkeypatch, model: str) -> str:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(ClipsamError) as info:
        edit.load_inpaint_pipeline(edit.InpaintOptions(model=model))
    assert time.perf_counter() - start < 30.0  # local_files_only must fail at once, never wait on a network
    message = str(info.value)
    assert "\n" not in message and "--inpaint-model" in message
    return message


def test_model_missing_from_cache_names_allow_download(monkeypatch):
    message = _load_error(monkeypatch, "clipsam-tests/no-such-inpainting-model")
    assert "--allow-download" in message and "diffusers cache" in message


def test_missing_or_incomplete_model_folder(monkeypatch, tmp_path):
    assert "does not exist" in _load_error(monkeypatch, str(tmp_path / "absent"))
    assert "not a complete diffusers" in _load_error(monkeypatch, str(tmp_path))


def test_dilate_grows_by_the_radius():
    mask = np.zeros((41, 41), dtype=bool)
    mask[20, 20] = True
    grown = dilate(mask, 6)
    assert grown[20, 26] and grown[14, 20] and not grown[20, 27]
    assert grown[20 + 4, 20 + 4] and not grown[20 + 6, 20 + 6]  # octagon: diagonals shorter than a square's
    np.testing.assert_array_equal(dilate(mask, 0), mask)


def test_feather_is_zero_outside_and_one_on_the_original_mask():
    target = np.zeros((40, 40), dtype=bool)
    target[10:30, 0:20] = True  # touches the left border
    grown = dilate(target, 5)
    alpha = feather(grown, 4)
    assert (alpha[~grown] == 0).all() and (alpha[target] == 1).all()
    assert alpha[20, 24] == pytest.approx(0.25)  # the grown mask's outermost ring
    assert (alpha[10:30, 0] == 1).all()  # no fade against the image border


@pytest.mark.parametrize(("height", "width"), [(52, 76), (480, 640), (2000, 300), (37, 37)])
def test_work_size_is_multiple_of_8_with_capped_long_side(height, width):
    work_h, work_w = work_size(height, width, 512)
    assert work_h % 8 == 0 and work_w % 8 == 0 and max(work_h, work_w) == 512
    assert abs(work_h / work_w - height / width) < 0.1 * height / width + 0.05


def test_paste_back_changes_only_the_grown_mask(scene):
    image, target = scene
    region = plan_region(target, dilate_px=3, feather_px=2, max_side=64)
    generated = np.full((*region.work_hw, 3), 255, dtype=np.uint8)
    pasted = paste_back(image, generated, region)
    grown = dilate(target, 3)
    np.testing.assert_array_equal(pasted[~grown], image[~grown])
    assert (pasted[target] == 255).all()
