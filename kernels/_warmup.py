"""Compile (or load from numba's on-disk cache) every kernel for every signature the engine calls."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def _timed(calls: dict[str, Callable[[], object]]) -> dict[str, float]:
    seconds = {}
    for name, call in calls.items():
        start = time.perf_counter()
        call()
        seconds[name] = time.perf_counter() - start
    return seconds


def _components_calls() -> dict[str, Callable[[], object]]:
    from .components import connected_components

    scores = np.zeros((2, 8), np.float32)
    calls = {}
    for dtype in (np.uint8, np.int16, np.int32):
        class_map = np.zeros((2, 8), dtype)
        name = f"components[{np.dtype(dtype).name}]"
        calls[name] = lambda m=class_map: connected_components(m, ignore=0, scores=scores, return_labels=True)
    return calls


def _rle_calls() -> dict[str, Callable[[], object]]:
    from . import rle

    words = np.zeros((2, 3, 8), np.uint8)  # 8-pixel rows: the word path
    odd = np.zeros((2, 3, 5), np.uint8)  # other widths: the byte path
    rles = rle.encode(words)
    return {
        "rle.encode[c-order]": lambda: (rle.encode(words), rle.encode(odd)),
        "rle.encode[fortran]": lambda: (
            rle.encode(np.asfortranarray(words.transpose(1, 2, 0))),
            rle.encode(np.asfortranarray(odd.transpose(1, 2, 0))),
        ),
        "rle.decode": lambda: rle.decode(rles),
        "rle.area+toBbox": lambda: (rle.area(rles), rle.toBbox(rles)),
        "rle.iou": lambda: rle.iou(rles, rles, [0, 0]),
        "rle.merge": lambda: rle.merge(rles),
    }


def _mask_calls() -> dict[str, Callable[[], object]]:
    from . import masks, rle

    square = np.zeros((4, 4), np.bool_)
    square[1:3, 1:3] = True
    rles = rle.encode(np.stack([square, square]))
    return {
        "masks.dedupe_same_class": lambda: masks.dedupe_same_class(rles, [0, 0], [0.5, 0.4], 0.5),
        "masks.resolve_overlaps": lambda: masks.resolve_overlaps(rles, [0.5, 0.4]),
        "masks.remove_small_regions": lambda: masks.remove_small_regions(square, 2, "holes"),
    }


def _upsample_calls() -> dict[str, Callable[[], object]]:
    from .upsample import warmup_upsample

    return {"upsample": warmup_upsample}


def warmup() -> dict[str, float]:
    """Compile or load every kernel; returns seconds spent per kernel group (near 0 once cached)."""
    seconds = _timed(_components_calls())
    seconds.update(_timed(_rle_calls()))
    seconds.update(_timed(_mask_calls()))
    seconds.update(_timed(_upsample_calls()))
    return seconds
