"""The checks behind `clipsam verify`: random inputs per graph, then a real image end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from clipsam.engine.backends.graph_stages import prompt_feeds
from clipsam.engine.bench.demo_scene import DEMO_VOCABULARY, demo_scene
from clipsam.engine.dense_clip import SclipStage
from clipsam.engine.factory import load_pipeline
from clipsam.engine.manifest import FAST_DECODER_GRAPHS, TEXT_GRAPH, Manifest, read_manifest
from clipsam.engine.pipeline import Pipeline, default_dense_config, vocabulary_from_words
from clipsam.engine.text.bank import TextBank
from clipsam.engine.types import Prompts
from clipsam.export import onnx_sam2_decoder as decoder_export
from clipsam.export import onnx_sam2_encoder as encoder_export
from clipsam.export.onnx_text import measure_text_parity
from clipsam.export.verify import VerifyReport, mask_iou, max_abs, sign_agreement, torch_models_for
from clipsam.reference.sclip import TorchSclip


def verify_artifacts(
    directory: Path | str,
    *,
    clip_checkpoint: Path | None = None,
    sam_checkpoint: Path | None = None,
    image: np.ndarray | None = None,
    prompt_count: int = 16,
    seed: int = 0,
) -> VerifyReport:
    """Compare DIR's graphs (onnxruntime) with the torch modules they were exported from."""
    manifest = read_manifest(directory)
    sclip, sam = torch_models_for(manifest, clip_checkpoint=clip_checkpoint, sam_checkpoint=sam_checkpoint)
    runtime = load_pipeline(directory, decoder="faithful")
    report = VerifyReport()
    rng = np.random.default_rng(seed)
    picture = demo_scene() if image is None else image
    if sclip is not None:  # a folder exported with --only sam2 has none
        _random_sclip(report, sclip, runtime, rng)
        _image_sclip(report, sclip, runtime, picture, Path(directory))
        if TEXT_GRAPH in manifest.graph_names:  # exports before issue 16 have no text graph
            report.max_abs.update(measure_text_parity(sclip, manifest.graph_path(TEXT_GRAPH)))
    if sam is not None:
        _verify_sam2(report, sam, runtime, manifest, picture, prompt_count, rng)
    return report


def _verify_sam2(
    report: VerifyReport, sam, runtime: Pipeline, manifest: Manifest, picture: np.ndarray, count: int, rng
) -> None:
    """The SAM2 graphs on random inputs and on the image, then the fast decoder's when the folder has it."""
    expected_features, prompts, reference = _random_sam2(report, sam, runtime, rng)
    _image_sam2(report, sam, runtime, picture, count, rng)
    if manifest.has_graphs(FAST_DECODER_GRAPHS):
        fast = load_pipeline(manifest.directory, decoder="fast")
        image_tensors = fast.mask_stage.image_graph.run(expected_features)
        outputs = fast.mask_stage.decoder.run({**image_tensors, **prompts})
        for name, value in reference.items():
            report.max_abs[f"sam2_fast_decoder.{name} (random prompts)"] = max_abs(outputs[name], value)
        _image_fast_masks(report, runtime, fast, picture, count, rng)


def _image_fast_masks(
    report: VerifyReport, runtime: Pipeline, fast, image: np.ndarray, count: int, rng
) -> None:
    """The fast decoder's final masks against the faithful graph's, per prompt, on the real image."""
    height, width = image.shape[:2]
    points = np.stack([rng.integers(0, width, count), rng.integers(0, height, count)], axis=1)
    prompts = _point_prompts(points.astype(np.float32))
    faithful = runtime.decode_masks(runtime.embed(image), prompts).masks
    report.fast_mask_iou = mask_iou(fast.decode_masks(fast.embed(image), prompts).masks, faithful)


def _random_sclip(report: VerifyReport, sclip, runtime: Pipeline, rng: np.random.Generator) -> None:
    size = sclip.image_size
    crops = rng.standard_normal((3, 3, size, size), dtype=np.float32)
    with torch.inference_mode():
        expected = sclip.encode_crops(torch.from_numpy(crops)).numpy()
    report.max_abs["sclip_tower.patch_features (random crops)"] = max_abs(
        runtime.dense_stage.crops.encode_crops(crops), expected
    )


def _random_sam2(report: VerifyReport, sam, runtime: Pipeline, rng: np.random.Generator) -> None:
    image = rng.standard_normal((1, 3, 1024, 1024), dtype=np.float32)
    with torch.inference_mode():
        reference = encoder_export.sam2_reference_features(sam.module, torch.from_numpy(image))
    expected = {name: value.numpy() for name, value in reference.items()}
    got = runtime.mask_stage.encoder.run({"image": image})
    for name, value in expected.items():
        report.max_abs[f"sam2_encoder.{name} (random image)"] = max_abs(got[name], value)
    prompts = decoder_export.random_prompts(7, 4, seed=int(rng.integers(2**31)))  # boxes, masks, negatives
    feeds = {**expected, **prompts}
    reference = decoder_export.reference_for_prompts(sam, expected, prompts)
    outputs = runtime.mask_stage.decoder.run(feeds)
    for name, value in reference.items():
        report.max_abs[f"sam2_decoder.{name} (random prompts)"] = max_abs(outputs[name], value)
    return expected, prompts, reference


def _image_sclip(report: VerifyReport, sclip, runtime: Pipeline, image: np.ndarray, directory: Path) -> None:
    vocabulary = vocabulary_from_words(list(DEMO_VOCABULARY))
    config = default_dense_config(vocabulary)
    torch_sclip = TorchSclip(sclip, TextBank(directory / "verify-text-cache"))
    reference = SclipStage(torch_sclip, torch_sclip)
    expected = reference.dense_map(reference.features(image, config), reference.text(vocabulary), config)
    got = runtime.dense(image, vocabulary, config)
    report.max_abs["sclip dense probs (image, from uint8)"] = max_abs(got.probs, expected.probs)
    report.max_abs["sclip pred disagreement (image)"] = float(np.mean(got.pred != expected.pred))


def _image_sam2(report: VerifyReport, sam, runtime: Pipeline, image: np.ndarray, count: int, rng) -> None:
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    height, width = image.shape[:2]
    points = np.stack([rng.integers(0, width, count), rng.integers(0, height, count)], axis=1)
    prompts = _point_prompts(points.astype(np.float32))
    predictor = SAM2ImagePredictor(sam.module)
    with torch.inference_mode():
        predictor.set_image(image)
    embedding = runtime.embed(image)
    features = embedding.arrays
    expected_features = {
        "image_embed": predictor._features["image_embed"].numpy(),
        "high_res_feats_0": predictor._features["high_res_feats"][0].numpy(),
        "high_res_feats_1": predictor._features["high_res_feats"][1].numpy(),
    }
    for name, value in expected_features.items():
        report.max_abs[f"sam2_encoder.{name} (image, from uint8)"] = max_abs(features[name], value)
    torch_low, torch_masks = _torch_per_prompt(predictor, prompts)
    feeds = {**embedding.arrays, **prompt_feeds(prompts, False, embedding.image_hw)}
    feeds["mask_input"] = np.zeros((len(prompts), 1, 256, 256), np.float32)
    feeds["has_mask_input"] = np.zeros(len(prompts), np.float32)
    outputs = runtime.mask_stage.decoder.run(feeds)
    ort_low = np.clip(outputs["low_res_masks"][:, 1:], -32.0, 32.0)  # sam2 returns its low-res masks clamped
    report.max_abs["sam2_decoder.low_res_masks (image)"] = max_abs(ort_low, torch_low)
    report.agreement = sign_agreement(ort_low, torch_low)
    report.mask_iou = mask_iou(runtime.decode_masks(embedding, prompts).masks, torch_masks)


def _torch_per_prompt(predictor, prompts: Prompts) -> tuple[np.ndarray, np.ndarray]:
    """sam2's own per-prompt path: low-res logits of tokens 1..3 [B, 3, 256, 256] and kept masks [B, H, W]."""
    lows, kept = [], []
    for i in range(len(prompts)):
        with torch.inference_mode():
            masks, iou, low = predictor.predict(prompts.coords[i], prompts.labels[i], multimask_output=True)
        lows.append(low)
        kept.append(masks[int(np.argmax(iou))] > 0)
    return np.stack(lows).astype(np.float32), np.stack(kept)


def _point_prompts(points_xy: np.ndarray) -> Prompts:
    count = points_xy.shape[0]
    return Prompts(
        coords=points_xy[:, None, :],
        labels=np.ones((count, 1), np.int32),
        class_ids=np.zeros(count, np.int32),
        scores=np.ones(count, np.float32),
        boxes=np.concatenate([points_xy - 8, points_xy + 8], axis=1),
        areas=np.ones(count, np.int64),
    )
