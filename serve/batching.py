"""Decoder batching across requests: group the prompts of requests on the same image into one decode call,
then split the candidates back per request."""

from __future__ import annotations

from dataclasses import fields

import numpy as np


def group_keys(keys: list[str], use_boxes: list[bool], prompts: list) -> list[list[int]]:
    """Indices of batch members that can share one decode call: same image key, same use_boxes, same points
    per prompt (Prompts.coords [B, P, 2]); groups in first-seen order, members in batch order."""
    groups: dict[tuple, list[int]] = {}
    for index, (key, boxes, request) in enumerate(zip(keys, use_boxes, prompts, strict=True)):
        groups.setdefault((key, bool(boxes), request.coords.shape[1:]), []).append(index)
    return list(groups.values())


def concat_prompts(parts: list):
    """The Prompts of several requests as one Prompts: every array field concatenated along axis 0 (prompt
    order = request order); other fields must agree."""
    if len(parts) == 1:
        return parts[0]
    values = {}
    for item in fields(parts[0]):
        column = [getattr(part, item.name) for part in parts]
        if isinstance(column[0], np.ndarray):
            values[item.name] = np.concatenate(column, axis=0)
        else:
            assert all(value == column[0] for value in column), f"Prompts.{item.name} differs within a group"
            values[item.name] = column[0]
    return type(parts[0])(**values)


def split_candidates(candidates, counts: list[int]) -> list:
    """RleCandidates (or MaskCandidates) of a grouped call → one per request, `counts` prompts each, in order.
    Array and list fields are sliced along axis 0; other fields are shared."""
    assert sum(counts) == len(candidates), (counts, len(candidates))
    if len(counts) == 1:
        return [candidates]
    bounds = np.concatenate([[0], np.cumsum(counts)]).tolist()
    sliced = []
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        values = {}
        for item in fields(candidates):
            value = getattr(candidates, item.name)
            values[item.name] = value[start:stop] if isinstance(value, np.ndarray | list | tuple) else value
        sliced.append(type(candidates)(**values))
    return sliced
