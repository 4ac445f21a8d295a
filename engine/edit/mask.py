"""Mask geometry of a generative edit: grow and feather the target mask, choose the region and size the
inpainting model works at, and paste its result back so nothing outside the grown mask changes.

All arrays are in the image frame (row, column) unless a name says `work` (the model's input size).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

# Context around the grown mask that the model sees, as a fraction of the mask's box side (and at least
# MIN_CONTEXT_PX): removing an object needs the surroundings it is painted from.
CONTEXT_FRACTION = 0.25
MIN_CONTEXT_PX = 32


@dataclass(frozen=True)
class EditRegion:
    """Where and at what size the model works.

    box: (top, bottom, left, right) in image pixels, bottom / right exclusive: the crop given to the model.
    work_hw: (height, width) of the model's input, multiples of 8, long side == the cap.
    grown: bool [h, w] (crop frame): the dilated target mask, what the model repaints.
    alpha: float32 [h, w] (crop frame) in [0, 1]: weight of the generated pixels; exactly 0 outside `grown`.
    """

    box: tuple[int, int, int, int]
    work_hw: tuple[int, int]
    grown: np.ndarray
    alpha: np.ndarray


def _shift_or(mask: np.ndarray, offsets: tuple[tuple[int, int], ...], pad_value: bool) -> np.ndarray:
    """bool [H, W]: OR of `mask` shifted by each (dy, dx) (AND when called on the complement)."""
    padded = np.pad(mask, 1, constant_values=pad_value)
    height, width = mask.shape
    out = np.zeros_like(mask)
    for dy, dx in offsets:
        out |= padded[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]
    return out


_SQUARE = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1))
_CROSS = ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))


def _grow_step(mask: np.ndarray, step: int) -> np.ndarray:
    # Alternating square and cross steps grow an octagon, close to a disc, at O(H·W) per pixel of radius.
    return _shift_or(mask, _SQUARE if step % 2 == 0 else _CROSS, pad_value=False)


def dilate(mask: np.ndarray, radius_px: int) -> np.ndarray:
    """bool [H, W]: `mask` grown by `radius_px` pixels (octagonal structuring element)."""
    grown = mask.astype(bool, copy=True)
    for step in range(radius_px):
        grown = _grow_step(grown, step)
    return grown


def feather(grown: np.ndarray, feather_px: int) -> np.ndarray:
    """float32 [H, W]: 1 deep inside `grown`, ramping to 1/feather_px at its edge, 0 outside.

    The image border counts as inside, so a mask touching the border is not faded there.
    """
    if feather_px <= 0:
        return grown.astype(np.float32)
    depth = grown.astype(np.float32)
    inside = grown.copy()
    for step in range(feather_px - 1):
        # Erosion = complement of the dilated complement (outside the image counts as inside the mask).
        inside = ~_shift_or(~inside, _SQUARE if step % 2 == 0 else _CROSS, pad_value=False)
        depth += inside
    return depth / np.float32(feather_px)


def work_size(height: int, width: int, max_side: int) -> tuple[int, int]:
    """(height, width) for the model: the crop scaled so its long side is `max_side`, sides multiples of 8."""
    scale = max_side / max(height, width)
    work_h = min(max_side, max(8, int(round(height * scale / 8)) * 8))
    work_w = min(max_side, max(8, int(round(width * scale / 8)) * 8))
    return work_h, work_w


def context_box(grown: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right): the box of `grown` (bool [H, W], not empty) plus context, clipped."""
    rows = np.flatnonzero(grown.any(axis=1))
    cols = np.flatnonzero(grown.any(axis=0))
    top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    margin = max(MIN_CONTEXT_PX, int(CONTEXT_FRACTION * max(bottom - top, right - left)))
    height, width = grown.shape
    return (
        max(0, top - margin),
        min(height, bottom + margin),
        max(0, left - margin),
        min(width, right + margin),
    )


def plan_region(target: np.ndarray, dilate_px: int, feather_px: int, max_side: int) -> EditRegion:
    """The region to repaint for `target` (bool [H, W], not empty) in the image frame."""
    grown_full = dilate(target, dilate_px)
    top, bottom, left, right = context_box(grown_full)
    grown = grown_full[top:bottom, left:right]
    return EditRegion(
        box=(top, bottom, left, right),
        work_hw=work_size(bottom - top, right - left, max_side),
        grown=grown,
        alpha=feather(grown, feather_px),
    )


def to_work(image: np.ndarray, region: EditRegion) -> tuple[Image.Image, Image.Image]:
    """The model's inputs: the crop (RGB) and the repaint mask ('L', 255 = repaint), both at work size.

    The mask is resized with bilinear weights and any coverage counts, so every grown pixel is repainted.
    """
    top, bottom, left, right = region.box
    work_h, work_w = region.work_hw
    crop = Image.fromarray(np.ascontiguousarray(image[top:bottom, left:right]))
    work_image = crop.resize((work_w, work_h), Image.Resampling.LANCZOS)
    coverage = Image.fromarray(region.grown.astype(np.uint8) * 255).resize(
        (work_w, work_h), Image.Resampling.BILINEAR
    )
    work_mask = Image.fromarray(((np.asarray(coverage) > 0) * 255).astype(np.uint8))
    return work_image, work_mask


def paste_back(image: np.ndarray, generated_work: np.ndarray, region: EditRegion) -> np.ndarray:
    """uint8 [H, W, 3]: `image` with the generated crop (uint8 [work_h, work_w, 3]) blended in by `alpha`.

    Pixels outside the grown mask are copied from `image` unchanged (byte-identical).
    """
    top, bottom, left, right = region.box
    generated = Image.fromarray(generated_work).resize((right - left, bottom - top), Image.Resampling.LANCZOS)
    original = image[top:bottom, left:right].astype(np.float32)
    alpha = region.alpha[:, :, None]
    blended = alpha * np.asarray(generated, dtype=np.float32) + (1.0 - alpha) * original
    blended = np.clip(np.round(blended), 0, 255).astype(np.uint8)
    edited = image.copy()
    edited[top:bottom, left:right] = np.where(
        region.grown[:, :, None], blended, image[top:bottom, left:right]
    )
    return edited
