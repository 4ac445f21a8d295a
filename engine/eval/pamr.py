"""Pixel-adaptive mask refinement (PAMR, Araslanov & Roth, CVPR 2020), as SCLIP applies it: optional, on the
query logits at image resolution, guided by the CLIP-normalised image, before the softmax.

Each pixel is linked to its 8 neighbours at every dilation (edge pixels replicate the border). The link
weight is a softmax, over all the pixel's neighbours, of −|I(p) − I(n)| / (0.1 · σ(p)), averaged over the
colour channels, where σ(p) is the (unbiased) standard deviation of the colours over the pixel and its
neighbours of all dilations (the pixel itself counted once per dilation). A refinement step replaces every
logit by the weighted sum of its neighbours' logits; the step is repeated `steps` times with fixed weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DEFAULT_STEPS = 10
DEFAULT_DILATIONS = (8, 16)
# The 3×3 neighbourhood without its centre, row-major, in units of the dilation.
_OFFSETS = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0))


def _neighbours(array: np.ndarray, dilation: int) -> list[np.ndarray]:
    """The 8 neighbours at `dilation` of every pixel of float32 [C, H, W] (border replicated): 8 views
    [C, H, W] in _OFFSETS order."""
    _, height, width = array.shape
    padded = np.pad(array, ((0, 0), (dilation, dilation), (dilation, dilation)), mode="edge")
    views = []
    for dy, dx in _OFFSETS:
        top, left = dilation + dy * dilation, dilation + dx * dilation
        views.append(padded[:, top : top + height, left : left + width])
    return views


def pamr_affinity(image: np.ndarray, dilations: Sequence[int] = DEFAULT_DILATIONS) -> np.ndarray:
    """Neighbour weights float32 [8·len(dilations), H, W] of image float32 [K, H, W] (image frame); they
    sum to 1 over axis 0. Neighbour order: dilations in order, then _OFFSETS."""
    image = np.asarray(image, dtype=np.float32)
    samples, distances = [], []
    for dilation in dilations:
        neighbours = _neighbours(image, dilation)
        samples += [image, *neighbours]
        distances += [np.abs(image - n) for n in neighbours]
    sigma = np.std(np.stack(samples, axis=1), axis=1, ddof=1)  # [K, H, W]
    logits = -np.stack(distances, axis=1) / (1e-8 + 0.1 * sigma[:, None])  # [K, P, H, W]
    logits = logits.mean(axis=0)  # [P, H, W]
    logits -= logits.max(axis=0, keepdims=True)
    weights = np.exp(logits)
    weights /= weights.sum(axis=0, keepdims=True)
    return weights.astype(np.float32)


def pamr(
    image: np.ndarray,
    logits: np.ndarray,
    steps: int = DEFAULT_STEPS,
    dilations: Sequence[int] = DEFAULT_DILATIONS,
) -> np.ndarray:
    """Refined logits float32 [Q, H, W].

    image: float32 [K, H, W] guide (SCLIP: the CLIP-normalised image resized to the image frame).
    logits: float32 [Q, H, W] per-query logits, same frame.
    """
    if image.shape[1:] != logits.shape[1:]:
        raise ValueError(f"PAMR guide {image.shape} and logits {logits.shape} differ in size")
    weights = pamr_affinity(image, dilations)
    refined = np.asarray(logits, dtype=np.float32).copy()
    update = np.empty_like(refined)
    product = np.empty_like(refined)  # reused buffer: the step is memory-bound, allocations double its time
    for _ in range(steps):
        update.fill(0.0)
        index = 0
        for dilation in dilations:
            for neighbour in _neighbours(refined, dilation):
                np.multiply(neighbour, weights[index], out=product)
                update += product
                index += 1
        refined, update = update, refined
    return refined
