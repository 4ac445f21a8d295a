"""Pictures of a result: the class overlay with outlines and legend, and the non-generative edits."""

from __future__ import annotations

import colorsys
from types import MappingProxyType

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from clipsam.engine.types import SegmentationResult
from clipsam.kernels import rle as rle_codec

RANDOM_WEIGHTS_LABEL = "RANDOM WEIGHTS - not a real prediction"
MODEL_LABELS = MappingProxyType({"clip": "CLIP", "sam2": "SAM2"})  # keys of a result's `models` record


def random_model_labels(models: dict) -> tuple[str, ...]:
    """("CLIP", "SAM2"), in that order, for the models whose entry in a result's `models` record says
    "random_weights": true."""
    return tuple(
        label
        for key, label in MODEL_LABELS.items()
        if isinstance(models.get(key), dict) and models[key].get("random_weights")
    )


def random_weights_label(models: dict) -> str:
    """The legend's warning: which models have random weights ("SAM2 random weights - …"); the generic
    RANDOM_WEIGHTS_LABEL for a record that does not say it per model."""
    labels = random_model_labels(models)
    return f"{' + '.join(labels)} random weights - not a real prediction" if labels else RANDOM_WEIGHTS_LABEL


def class_colors(num_classes: int) -> np.ndarray:
    """uint8 [C, 3]: distinct colours by golden-ratio hue steps (stable for a given class index)."""
    colors = []
    for index in range(num_classes):
        hue = (index * 0.618033988749895) % 1.0
        red, green, blue = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
        colors.append((int(red * 255), int(green * 255), int(blue * 255)))
    return np.array(colors, dtype=np.uint8).reshape(num_classes, 3)


def segment_masks(result: SegmentationResult) -> np.ndarray:
    """bool [N, H, W]: every segment's mask decoded from its RLE, in result order."""
    if not result.segments:
        return np.zeros((0, result.height, result.width), dtype=bool)
    rles = [dict(s.rle, counts=s.rle["counts"].encode()) for s in result.segments]
    return np.moveaxis(rle_codec.decode(rles), 2, 0).astype(bool)


def mask_outline(mask: np.ndarray) -> np.ndarray:
    """bool [H, W]: pixels of `mask` with a 4-neighbour outside it (image borders count as outside)."""
    padded = np.pad(mask, 1, constant_values=False)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~interior


def overlay(image: np.ndarray, result: SegmentationResult, alpha: float = 0.5) -> np.ndarray:
    """uint8 [H, W, 3]: classes tinted over the image, each instance outlined, with a legend."""
    colors = class_colors(len(result.class_names))
    canvas = image.astype(np.float32)
    outlines = []
    for segment, mask in zip(result.segments, segment_masks(result), strict=True):
        color = colors[segment.class_id].astype(np.float32)
        canvas[mask] = (1.0 - alpha) * canvas[mask] + alpha * color
        outlines.append((mask_outline(mask), colors[segment.class_id]))
    picture = canvas.round().clip(0, 255).astype(np.uint8)
    for outline, color in outlines:
        picture[outline] = color
    present = sorted({s.class_id for s in result.segments})
    warning = random_weights_label(result.models) if result.random_weights else None
    return _draw_legend(picture, [(result.class_names[c], colors[c]) for c in present], warning)


def _draw_legend(
    picture: np.ndarray, entries: list[tuple[str, np.ndarray]], warning: str | None
) -> np.ndarray:
    """The legend box at the top left: the random-weights `warning` (red) when given, then the entries."""
    image = Image.fromarray(picture)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    lines = [(warning, None)] if warning is not None else []
    lines += entries if entries else [("no segments", None)]
    line_h, swatch = 14, 10
    width = 8 + swatch + 6 + max(int(draw.textlength(text, font=font)) for text, _ in lines) + 8
    height = 6 + line_h * len(lines) + 2
    draw.rectangle([0, 0, width, height], fill=(0, 0, 0))
    for row, (text, color) in enumerate(lines):
        top = 4 + row * line_h
        if color is not None:
            draw.rectangle([8, top + 1, 8 + swatch, top + 1 + swatch], fill=tuple(int(c) for c in color))
        text_color = (255, 80, 80) if color is None and warning is not None and row == 0 else (255, 255, 255)
        draw.text((8 + swatch + 6, top), text, fill=text_color, font=font)
    return np.asarray(image)


def target_mask(result: SegmentationResult, class_name: str | None) -> np.ndarray:
    """bool [H, W]: union of the segments of `class_name` (all segments when None)."""
    union = np.zeros((result.height, result.width), dtype=bool)
    for segment, mask in zip(result.segments, segment_masks(result), strict=True):
        if class_name is None or segment.class_name == class_name:
            union |= mask
    return union


def mask_picture(mask: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3]: white where the mask is, black elsewhere (the `replace` output without inpainting)."""
    return np.repeat((mask.astype(np.uint8) * 255)[:, :, None], 3, axis=2)


def blacken(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3]: the image, masked region black (the `remove` output without inpainting)."""
    edited = image.copy()
    edited[mask] = 0
    return edited


def edit_picture(image: np.ndarray, result: SegmentationResult, edit: str, target: str | None) -> np.ndarray:
    """uint8 [H, W, 3], `segment --edit` without inpainting: the overlay ("segment"), the target class's
    white-on-black mask ("replace") or the image with the target blackened ("remove")."""
    if edit == "segment":
        return overlay(image, result)
    mask = target_mask(result, target)
    return mask_picture(mask) if edit == "replace" else blacken(image, mask)
