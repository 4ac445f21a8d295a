"""Prompts a user gives directly (points and boxes), for SAM2 without SCLIP. Torch-free.

Each point and each box is one prompt and gives one segment. Prompt i (points first, in the order given, then
boxes) gets class id i and the class name "prompt i" (PROMPT_CLASS_PREFIX), so the JSON, the overlay legend
and the colours tell the prompts apart.
"""

from __future__ import annotations

import numpy as np

from clipsam.engine.errors import ClipsamError
from clipsam.engine.types import Prompts

PROMPT_CLASS_PREFIX = "prompt"


class PromptError(ClipsamError):
    """A point or box prompt is malformed or lies outside the image."""


def prompt_class_names(count: int) -> tuple[str, ...]:
    """("prompt 0", …, "prompt count-1"): the class names of a run with `count` user prompts."""
    return tuple(f"{PROMPT_CLASS_PREFIX} {index}" for index in range(count))


def user_prompt_groups(
    points_xy: np.ndarray, boxes_xyxy: np.ndarray, image_hw: tuple[int, int]
) -> list[tuple[Prompts, bool]]:
    """The user's prompts as SAM2 calls: [(Prompts, use_boxes)], one group for the points, one for the boxes.

    points_xy: float [N, 2] (x, y), image frame; boxes_xyxy: float [M, 4] (x0, y0, x1, y1), image frame.
    Points and boxes go to SAM2 in separate groups because a decoder call pads every prompt to the same
    number of points, and a padding point changes SAM2's mask; within a group every prompt has the same
    shape as a one-prompt SAM2ImagePredictor call. class_ids: points 0..N-1, boxes N..N+M-1; scores 1.
    Raises PromptError when there is no prompt, or one lies outside the image or is an inverted box.
    """
    points = np.asarray(points_xy, np.float32).reshape(-1, 2)
    boxes = np.asarray(boxes_xyxy, np.float32).reshape(-1, 4)
    _check_inside(points, boxes, image_hw)
    groups = []
    if len(points):
        ids = np.arange(len(points), dtype=np.int32)
        groups.append(
            (
                _prompts(points[:, None, :], np.ones((len(points), 1), np.int32), ids, _point_boxes(points)),
                False,
            )
        )
    if len(boxes):
        ids = np.arange(len(points), len(points) + len(boxes), dtype=np.int32)
        no_points = np.zeros((len(boxes), 0, 2), np.float32)
        groups.append((_prompts(no_points, np.zeros((len(boxes), 0), np.int32), ids, boxes), True))
    return groups


def _prompts(coords: np.ndarray, labels: np.ndarray, class_ids: np.ndarray, boxes: np.ndarray) -> Prompts:
    count = class_ids.shape[0]
    box_areas = np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0)
    return Prompts(
        coords=coords,
        labels=labels,
        class_ids=class_ids,
        scores=np.ones(count, np.float32),
        boxes=boxes,
        areas=box_areas.astype(np.int64),
    )


def _point_boxes(points: np.ndarray) -> np.ndarray:
    """float32 [N, 4]: a point's degenerate box (x, y, x, y); unused, since point prompts go without boxes."""
    return np.concatenate([points, points], axis=1).astype(np.float32)


def _check_inside(points: np.ndarray, boxes: np.ndarray, image_hw: tuple[int, int]) -> None:
    height, width = image_hw
    if len(points) + len(boxes) == 0:
        raise PromptError("no prompt given: pass --points x,y and / or --boxes x0,y0,x1,y1")
    for x, y in points:
        if not (0 <= x <= width and 0 <= y <= height):
            raise PromptError(f"point {x:g},{y:g} lies outside the {width}x{height} image")
    for x0, y0, x1, y1 in boxes:
        text = f"{x0:g},{y0:g},{x1:g},{y1:g}"
        if not (x0 < x1 and y0 < y1):
            raise PromptError(f"box {text} is empty or inverted: give x0,y0,x1,y1 with x0 < x1 and y0 < y1")
        if not (0 <= x0 and 0 <= y0 and x1 <= width and y1 <= height):
            raise PromptError(f"box {text} lies outside the {width}x{height} image")
