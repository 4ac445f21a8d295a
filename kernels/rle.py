"""COCO RLE, a drop-in replacement for `pycocotools.mask` built on numba kernels.

Same conventions and return types as pycocotools: an RLE is {"size": [h, w], "counts": bytes} with the
compressed counts string (str is accepted on input); `decode` returns Fortran-ordered uint8 (h, w, n) or
(h, w); `area` uint32; `toBbox` float64 (x, y, w, h); `iou` float64 [len(dt), len(gt)].

`encode` additionally takes a C-ordered (n, h, w) batch, read in place: a 3-D array that is
Fortran-contiguous is pycocotools' (h, w, n); any other 3-D array is (n, h, w) (non-contiguous ones are
copied). The ambiguous layouts, 3-D arrays with at most one side over 1 (both C- and Fortran-contiguous),
are read the pycocotools way; `encode_batch` always reads (n, h, w). bool and uint8 masks are accepted
and any nonzero value is foreground (pycocotools assumes 0/1 values).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ._lazy import LazyModule

_rle_codec = LazyModule("clipsam.kernels._rle_codec")  # numba: imported on first call
_rle_ops = LazyModule("clipsam.kernels._rle_ops")  # numba: imported on first call
_rle_sets = LazyModule("clipsam.kernels._rle_sets")  # numba: imported on first call

Rle = dict


def _as_uint8(mask: np.ndarray, name: str) -> np.ndarray:
    if not isinstance(mask, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(mask).__name__}")
    if mask.dtype == np.bool_:
        return mask.view(np.uint8)
    if mask.dtype != np.uint8:
        raise ValueError(f"{name} dtype must be bool or uint8, got {mask.dtype}")
    return mask


def encode_counts(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Uncompressed counts of a C-ordered batch.

    masks: bool / uint8 [n, h, w] (read in place when C-contiguous, copied otherwise).
    Returns (counts uint32 [total], offsets int64 [n + 1]); mask i owns counts[offsets[i]:offsets[i + 1]],
    which equals SAM2's `mask_to_rle_pytorch` counts.
    """
    masks = _as_uint8(masks, "masks")
    if masks.ndim != 3:
        raise ValueError(f"masks must be 3-D (n, h, w), got shape {masks.shape}")
    return _encode_c_ordered(masks)


def _encode_c_ordered(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(counts, offsets) of uint8 [n, h, w] masks, read in place when C-contiguous."""
    masks = np.ascontiguousarray(masks)
    n, height, width = masks.shape
    if height * width == 0:
        return np.zeros(n, np.uint32), np.arange(n + 1, dtype=np.int64)
    # Whole 8-pixel words let unchanged stretches of a row be skipped 8 pixels at a time.
    if width % 8 == 0 and masks.ctypes.data % 8 == 0:
        words = masks.view(np.uint64)
    else:
        words = masks
    return _rle_codec.encode_rows(masks, words)


def _encode_column_major(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(counts, offsets) of uint8 [n, h * w] masks already in column-major pixel order (C-contiguous)."""
    n, total = blocks.shape
    if total == 0:
        return np.zeros(n, np.uint32), np.arange(n + 1, dtype=np.int64)
    if total % 8 == 0 and blocks.ctypes.data % 8 == 0:
        words = blocks.view(np.uint64)
    else:
        words = blocks
    return _rle_codec.encode_flat(blocks, words)


def _strings(counts: np.ndarray, offsets: np.ndarray, height: int, width: int) -> list[Rle]:
    chars, char_offsets = _rle_codec.counts_to_strings(counts, offsets)
    data = chars.tobytes()
    bounds = char_offsets.tolist()
    size = [int(height), int(width)]
    return [{"size": list(size), "counts": data[a:b]} for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def encode_batch(masks: np.ndarray) -> list[Rle]:
    """Compressed RLEs of a (n, h, w) batch, never read as pycocotools' (h, w, n): the engine's entry point.

    masks: bool / uint8 [n, h, w], read in place when C-contiguous (copied otherwise).
    """
    counts, offsets = encode_counts(masks)
    return _strings(counts, offsets, masks.shape[1], masks.shape[2])


def encode(bimask: np.ndarray) -> Rle | list[Rle]:
    """Masks to compressed RLEs: a dict for a 2-D (h, w) mask, a list for a 3-D batch (see module doc)."""
    bimask = _as_uint8(bimask, "bimask")
    if bimask.ndim == 2:
        height, width = bimask.shape
        if bimask.flags.f_contiguous:
            counts, offsets = _encode_column_major(bimask.T.reshape(1, height * width))
        else:
            counts, offsets = _encode_c_ordered(bimask[None])
        return _strings(counts, offsets, height, width)[0]
    if bimask.ndim != 3:
        raise ValueError(f"bimask must be 2-D (h, w) or 3-D, got shape {bimask.shape}")
    if bimask.flags.f_contiguous:
        height, width, n = bimask.shape
        # Fortran (h, w, n) memory is C (n, w, h): each mask is one column-major block.
        counts, offsets = _encode_column_major(bimask.T.reshape(n, width * height))
    else:
        n, height, width = bimask.shape
        counts, offsets = _encode_c_ordered(bimask)
    return _strings(counts, offsets, height, width)


def _check_rle(rle: object, name: str) -> bytes:
    if not isinstance(rle, dict) or "counts" not in rle or "size" not in rle:
        raise ValueError(f"{name} must hold RLE dicts {{'size': [h, w], 'counts': bytes}}, got {rle!r:.80}")
    counts = rle["counts"]
    if isinstance(counts, str):
        return counts.encode()
    if not isinstance(counts, bytes):
        raise ValueError(f"{name}: compressed counts must be bytes or str (use frPyObjects for lists)")
    return counts


def _joined_strings(*named: Sequence[Rle] | str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Compressed strings of RLE lists given as (rles, name, rles, name, ...), back to back.

    Returns (chars uint8 [C], char_offsets int64 [n + 1], sizes int64 [n, 2] as (h, w)) over all lists.
    """
    strings: list[bytes] = []
    sizes: list[list[int]] = []
    for rles, name in zip(named[::2], named[1::2], strict=True):
        if isinstance(rles, dict) or not isinstance(rles, Sequence):
            raise ValueError(f"{name} must be a list of RLE dicts, got {type(rles).__name__}")
        strings.extend(_check_rle(rle, name) for rle in rles)
        sizes.extend([int(v) for v in rle["size"]] for rle in rles)
    lengths = np.fromiter(map(len, strings), np.int64, len(strings))
    char_offsets = np.zeros(len(strings) + 1, np.int64)
    np.cumsum(lengths, out=char_offsets[1:])
    chars = np.frombuffer(b"".join(strings), np.uint8)
    return chars, char_offsets, np.array(sizes, np.int64).reshape(len(strings), 2)


def decode_counts(rles: Sequence[Rle], name: str = "rleObjs") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Compressed RLEs to (counts uint32, offsets int64 [n + 1], sizes int64 [n, 2] as (h, w))."""
    chars, char_offsets, sizes = _joined_strings(rles, name)
    counts, offsets = _rle_codec.strings_to_counts(chars, char_offsets)
    return counts, offsets, sizes


def _one_size(sizes: np.ndarray, name: str) -> tuple[int, int]:
    if len(sizes) and (sizes != sizes[0]).any():
        raise ValueError(f"{name}: all RLEs must have the same size, got {np.unique(sizes, axis=0).tolist()}")
    return (int(sizes[0, 0]), int(sizes[0, 1])) if len(sizes) else (0, 0)


def decode(rleObjs: Rle | list[Rle]) -> np.ndarray:  # noqa: N803 (pycocotools' argument name)
    """RLEs to Fortran-ordered uint8 masks: (h, w, n) for a list, (h, w) for one dict."""
    single = isinstance(rleObjs, dict)
    counts, offsets, sizes = decode_counts([rleObjs] if single else rleObjs)
    if len(sizes) == 0:
        raise ValueError("rleObjs must not be empty")
    height, width = _one_size(sizes, "rleObjs")
    flat, bad = _rle_codec.decode_flat(counts, offsets, height * width)
    if bad >= 0:
        raise ValueError(f"rleObjs[{bad}]: invalid RLE, its counts do not sum to h * w = {height * width}")
    # (n, w * h) column-major blocks are exactly a Fortran (h, w, n) array.
    masks = flat.reshape(len(sizes), width, height).transpose(2, 1, 0)
    return masks[:, :, 0] if single else masks


def area(rleObjs: Rle | list[Rle]) -> np.ndarray | np.uint32:  # noqa: N803
    """Foreground pixel count: uint32 [n] for a list, np.uint32 for one dict."""
    single = isinstance(rleObjs, dict)
    counts, offsets, _ = decode_counts([rleObjs] if single else rleObjs)
    out = _rle_ops.areas(counts, offsets)
    return out[0] if single else out


def toBbox(rleObjs: Rle | list[Rle]) -> np.ndarray:  # noqa: N802, N803
    """Boxes (x, y, w, h): float64 [n, 4] for a list, [4] for one dict."""
    single = isinstance(rleObjs, dict)
    counts, offsets, sizes = decode_counts([rleObjs] if single else rleObjs)
    out = _rle_sets.bboxes(counts, offsets, sizes)
    return out[0] if single else out


def merge(rleObjs: list[Rle], intersect: bool | int = 0) -> Rle:  # noqa: N803
    """Union (intersect=0) or intersection (intersect=1) of equal-size RLEs, as one RLE dict."""
    counts, offsets, sizes = decode_counts(rleObjs)
    if len(sizes) == 0 or (sizes != sizes[0]).any():
        return {"size": [0, 0], "counts": b""}  # pycocotools' answer for no input or mixed sizes
    height, width = int(sizes[0, 0]), int(sizes[0, 1])
    merged = _rle_ops.merge(counts, offsets, height * width, bool(intersect))
    return _strings(merged, np.array([0, merged.shape[0]], np.int64), height, width)[0]


def _boxes_or_rles(objs: object, name: str) -> tuple[str, object]:
    if isinstance(objs, np.ndarray):
        boxes = objs.astype(np.float64)
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise ValueError(f"{name}: a numpy array must hold boxes [n, 4], got shape {objs.shape}")
        return "box", boxes
    if not isinstance(objs, list):
        raise ValueError(f"{name} must be a list of RLEs, a list of boxes or an [n, 4] array")
    if all(isinstance(o, dict) for o in objs):
        return "rle", objs
    if all(isinstance(o, list | np.ndarray) and len(o) == 4 for o in objs):
        return "box", np.array(objs, np.float64).reshape(len(objs), 4)
    raise ValueError(f"{name}: a list must hold only RLE dicts or only [x, y, w, h] boxes")


def _box_iou(dt: np.ndarray, gt: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    # Same operations as pycocotools' bbIou, so the doubles come out bit-identical.
    overlap_w = np.minimum(dt[:, None, 0] + dt[:, None, 2], gt[None, :, 0] + gt[None, :, 2])
    overlap_w = overlap_w - np.maximum(dt[:, None, 0], gt[None, :, 0])
    overlap_h = np.minimum(dt[:, None, 1] + dt[:, None, 3], gt[None, :, 1] + gt[None, :, 3])
    overlap_h = overlap_h - np.maximum(dt[:, None, 1], gt[None, :, 1])
    inter = overlap_w * overlap_h
    dt_area = (dt[:, 2] * dt[:, 3])[:, None]
    union = np.where(crowd[None, :], dt_area, dt_area + (gt[:, 2] * gt[:, 3])[None, :] - inter)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = inter / union
    return np.where((overlap_w > 0) & (overlap_h > 0), out, 0.0)


def iou(
    dt: list[Rle] | np.ndarray, gt: list[Rle] | np.ndarray, pyiscrowd: Sequence[int]
) -> np.ndarray | list:
    """IoU of every dt against every gt: float64 [len(dt), len(gt)] ([] when either is empty).

    dt, gt: lists of RLE dicts, or boxes (x, y, w, h) as [n, 4] arrays / lists. pyiscrowd: one flag per gt;
    for a crowd gt the union is the dt area. Size-mismatched RLE pairs whose boxes overlap get -1.
    """
    crowd = np.asarray(pyiscrowd, np.uint8).reshape(-1).astype(np.bool_)
    n_gt = len(gt)
    if crowd.shape[0] != n_gt:
        raise ValueError(f"pyiscrowd must have one flag per gt ({n_gt}), got {crowd.shape[0]}")
    if len(dt) == 0 or n_gt == 0:
        return []
    dt_kind, dt_data = _boxes_or_rles(dt, "dt")
    gt_kind, gt_data = _boxes_or_rles(gt, "gt")
    if dt_kind != gt_kind:
        raise ValueError("dt and gt must both be RLEs or both be boxes")
    if dt_kind == "box":
        return _box_iou(dt_data, gt_data, crowd)
    chars, char_offsets, sizes = _joined_strings(dt_data, "dt", gt_data, "gt")
    swept = _swept_iou(chars, char_offsets, sizes, len(dt), crowd)
    if swept is not None:
        return swept
    # mixed sizes or invalid counts: walk each pair whose boxes overlap, as pycocotools does
    counts, offsets = _rle_codec.strings_to_counts(chars, char_offsets)
    starts, ends, run_offsets = _rle_ops.intervals(counts, offsets)
    boxes = _rle_sets.bboxes(counts, offsets, sizes)
    areas = _rle_ops.areas(counts, offsets).astype(np.int64)
    shared = np.zeros((0, 0), np.int64)
    return _rle_ops.iou_matrix(starts, ends, run_offsets, boxes, areas, sizes, len(dt), crowd, shared)


def _swept_iou(
    chars: np.ndarray, char_offsets: np.ndarray, sizes: np.ndarray, n_dt: int, crowd: np.ndarray
) -> np.ndarray | None:
    """IoU float64 [n_dt, n_gt] from one sweep over all intervals (see `_rle_sets.cross_intersections`), or
    None when the sweep does not apply: masks of several sizes, or counts that overrun h * w.

    chars, char_offsets, sizes: dt then gt strings, as `_joined_strings` gives them.
    """
    height, width = int(sizes[0, 0]), int(sizes[0, 1])
    # events pack (2 * position + 1, mask) into one int64; intersections are summed mod 2**32
    mask_bits = max(1, (len(sizes) - 1).bit_length())
    if not (sizes == sizes[0]).all() or not 0 < height * width < 2**32 or mask_bits > 24:
        return None
    boxes, areas, events, max_end = _rle_sets.iou_inputs(chars, char_offsets, height, width, mask_bits)
    if max_end > height * width:
        return None
    shared = _rle_sets.cross_intersections(events, mask_bits, max_end.bit_length(), n_dt, len(sizes) - n_dt)
    no_runs = np.zeros(0, np.int64)
    return _rle_ops.iou_matrix(
        no_runs, no_runs, np.zeros(1, np.int64), boxes, areas, sizes, n_dt, crowd, shared
    )


def frPyObjects(pyobj: Rle | list[Rle], h: int, w: int) -> Rle | list[Rle]:  # noqa: N802
    """Uncompressed RLEs ({"size", "counts": list of ints}) to compressed ones, as pycocotools.

    Polygons and boxes are not supported here (they need pycocotools' polygon rasteriser).
    """
    single = isinstance(pyobj, dict)
    objs = [pyobj] if single else pyobj
    if not isinstance(objs, list) or not all(
        isinstance(o, dict) and "counts" in o and "size" in o for o in objs
    ):
        raise ValueError(
            "pyobj must be an uncompressed RLE dict or a list of them (polygons/boxes unsupported)"
        )
    out = []
    for obj in objs:
        counts = np.asarray(obj["counts"], np.int64).astype(np.uint32)
        offsets = np.array([0, counts.shape[0]], np.int64)
        out.extend(_strings(counts, offsets, int(obj["size"][0]), int(obj["size"][1])))
    return out[0] if single else out
