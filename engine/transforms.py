"""Image preprocessing, numpy only. Each model's preprocessing lives here and nowhere else.

SCLIP (MMSegmentation test pipeline of the official code):
  1. `Resize(scale=(2048, S), keep_ratio=True)` on the uint8 image: mmcv's `imrescale`, i.e. cv2 bilinear
     (half-pixel centres, no antialiasing) to the size given by `sclip_resize_shape`, rounded to uint8.
  2. `SegDataPreProcessor`: float, (x - mean) / std with CLIP's mean/std on 0-255 RGB.
We keep that order (resize the uint8 image, round, then normalise) so the network sees what it saw in the
paper's evaluation; `resize_image_u8` matches cv2 within one grey level (cv2 uses 11-bit weights).

SAM2 image and prompt transforms in numpy, equal to what `SAM2ImagePredictor` feeds the model.

sam2's `SAM2Transforms` does, on the uint8 RGB image:
  1. `ToTensor`: [H, W, 3] uint8 -> [3, H, W] float32 in [0, 1] (x / 255).
  2. torchvision `Resize((1024, 1024))` on that float tensor: the aspect ratio is NOT kept, and torchvision
     (0.17+, 0.29.1 here) antialiases tensors by default, i.e. torch's `_upsample_bilinear2d_aa`.
  3. `Normalize` with ImageNet mean / std.
Prompts go from the image frame to the 1024 frame as x / W * 1024, y / H * 1024 (float32). A box becomes two
corner points labelled 2 (top-left) and 3 (bottom-right), placed before the prompt's points.

The antialiased resize here reproduces torch's CPU arithmetic (float32 weights built the same way, taps summed
in the same order with its fused multiply-adds, width first then height): the preprocessed tensor is
bit-identical to sam2's in our tests.
"""

from __future__ import annotations

import numpy as np

CLIP_MEAN_255 = np.array([122.771, 116.746, 104.094], dtype=np.float32)
CLIP_STD_255 = np.array([68.501, 66.632, 70.323], dtype=np.float32)


def _axis_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of bilinear resampling along one axis, as torch computes them for
    align_corners=False without antialiasing: src = (dst + 0.5) * in/out - 0.5, clamped at 0."""
    scale = np.float64(np.float32(in_size / out_size))
    # float32 scale, but src rounded once from the exact product (as torch's fused multiply-add does): this
    # matches torch's weights bit for bit instead of to a few ulps.
    src = ((np.arange(out_size, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    src = np.maximum(src, np.float32(0.0))
    index0 = np.minimum(src.astype(np.int64), in_size - 1)
    index1 = np.minimum(index0 + 1, in_size - 1)
    weight1 = (src - index0.astype(np.float32)).astype(np.float32)
    weight0 = np.float32(1.0) - weight1
    return index0, index1, weight0, weight1


def _resize_axis(array: np.ndarray, out_size: int, axis: int) -> np.ndarray:
    in_size = array.shape[axis]
    if in_size == out_size:
        return array
    index0, index1, weight0, weight1 = _axis_taps(in_size, out_size)
    shape = [1] * array.ndim
    shape[axis] = out_size
    lower = np.take(array, index0, axis=axis)
    upper = np.take(array, index1, axis=axis)
    return lower * weight0.reshape(shape) + upper * weight1.reshape(shape)


def resize_bilinear(
    array: np.ndarray, size_hw: tuple[int, int], *, channels_last: bool = False
) -> np.ndarray:
    """Bilinear resize equal to torch `F.interpolate(mode="bilinear", align_corners=False, antialias=False)`.

    array: float32 [C, H, W] (or [H, W, C] with channels_last=True, or [H, W]); also [N, C, H, W].
    size_hw: (out_h, out_w). Returns float32 of the same layout with H, W replaced. Separable: rows, then
    columns (the two passes commute up to float rounding, ~1e-7 relative).
    """
    array = np.asarray(array, dtype=np.float32)
    out_h, out_w = int(size_hw[0]), int(size_hw[1])
    assert out_h > 0 and out_w > 0, size_hw
    if array.ndim == 2:
        h_axis, w_axis = 0, 1
    elif channels_last:
        assert array.ndim == 3, array.shape
        h_axis, w_axis = 0, 1
    else:
        h_axis, w_axis = array.ndim - 2, array.ndim - 1
    resized = _resize_axis(array, out_h, h_axis)
    resized = _resize_axis(resized, out_w, w_axis)
    return np.ascontiguousarray(resized, dtype=np.float32)


def sclip_resize_shape(height: int, width: int, short_side: int, long_cap: int = 2048) -> tuple[int, int]:
    """Output (h, w) of mmcv's keep-ratio rescale to scale=(long_cap, short_side), as SCLIP's configs use.

    scale = min(long_cap / long edge, short_side / short edge); each side int(x * scale + 0.5).
    short_side 0 means no resize.
    """
    if short_side == 0:
        return height, width
    max_long, max_short = max(long_cap, short_side), min(long_cap, short_side)
    scale = min(max_long / max(height, width), max_short / min(height, width))
    return int(height * scale + 0.5), int(width * scale + 0.5)


def resize_image_u8(image_u8: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """uint8 [H, W, 3] -> uint8 [h, w, 3], bilinear (half-pixel centres, no antialias), rounded half up like
    cv2's fixed-point INTER_LINEAR (which mmcv's `imrescale` calls)."""
    assert image_u8.dtype == np.uint8 and image_u8.ndim == 3, (image_u8.dtype, image_u8.shape)
    if tuple(image_u8.shape[:2]) == tuple(size_hw):
        return image_u8
    resized = resize_bilinear(image_u8.astype(np.float32), size_hw, channels_last=True)
    return np.clip(np.floor(resized + 0.5), 0, 255).astype(np.uint8)


def normalize_clip(image_u8: np.ndarray) -> np.ndarray:
    """uint8 RGB [H, W, 3] -> float32 [3, H, W], (x - mean) / std with CLIP's 0-255 mean/std."""
    assert image_u8.ndim == 3 and image_u8.shape[2] == 3, image_u8.shape
    normalized = (image_u8.astype(np.float32) - CLIP_MEAN_255) / CLIP_STD_255
    return np.ascontiguousarray(normalized.transpose(2, 0, 1))


def sclip_preprocess(image_u8: np.ndarray, short_side: int, long_cap: int = 2048) -> np.ndarray:
    """SCLIP's whole preprocessing: uint8 RGB [H, W, 3] -> float32 [3, h, w] normalised, (h, w) from
    `sclip_resize_shape` (the network's frame; predictions are resized back to H×W afterwards)."""
    height, width = image_u8.shape[:2]
    resized = resize_image_u8(image_u8, sclip_resize_shape(height, width, short_side, long_cap))
    return normalize_clip(resized)


SAM2_IMAGE_SIZE = 1024
SAM2_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)  # ImageNet, on [0, 1] RGB
SAM2_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
SAM2_BOX_LABELS = (2, 3)  # prompt-encoder labels of a box's top-left and bottom-right corners


def antialias_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Taps of torch's antialiased bilinear resampling along one axis (align_corners=False).

    Returns (first int64 [out_size], weights float32 [out_size, K]): output i is
    sum_k weights[i, k] * input[first[i] + k] over the taps k with nonzero weight (the padded taps past a
    row's support have weight 0 and an index that may run past the input; callers clamp it).
    When downsampling, the triangle filter is widened by the scale so every input pixel contributes
    (the antialiasing); when upsampling it is the plain bilinear triangle. Each row is normalised to sum 1.
    """
    # torch builds these in the input's dtype (float32), mixing in double-precision literals: replicate each
    # rounding step so the weights come out bit-identical.
    scale = np.float32(in_size) / np.float32(out_size)
    support = np.float32(scale) if scale >= 1.0 else np.float32(1.0)
    inv_scale = np.float32(1.0 / np.float64(scale)) if scale >= 1.0 else np.float32(1.0)
    n_taps = int(np.ceil(support)) * 2 + 1
    center = (np.float64(scale) * (np.arange(out_size, dtype=np.float64) + 0.5)).astype(np.float32)
    # static_cast<int64_t> truncates toward zero
    first = np.trunc((center - support).astype(np.float64) + 0.5).astype(np.int64)
    first = np.maximum(first, 0)
    last = np.minimum(np.trunc((center + support).astype(np.float64) + 0.5).astype(np.int64), in_size)
    tap = np.arange(n_taps, dtype=np.int64)
    offset = ((first[:, None] + tap[None, :]).astype(np.float32) - center[:, None]).astype(np.float64)
    distance = np.abs(((offset + 0.5) * np.float64(inv_scale)).astype(np.float32))
    weights = np.where(distance < 1.0, (1.0 - distance.astype(np.float64)).astype(np.float32), np.float32(0))
    weights = np.where(tap[None, :] < (last - first)[:, None], weights, np.float32(0)).astype(np.float32)
    total = np.zeros(out_size, np.float32)
    for k in range(n_taps):  # sequential float32 sum, as torch's loop
        total += weights[:, k]
    safe_total = np.where(total != 0, total, np.float32(1))
    weights = np.where(total[:, None] != 0, weights / safe_total[:, None], weights).astype(np.float32)
    return first, weights


def _resize_axis_antialias(planes: np.ndarray, out_size: int, axis: int) -> np.ndarray:
    """Antialiased bilinear resize of float32 `planes` along `axis`, taps accumulated as torch does.

    torch's loop is `out = t0 * w0; out += t_k * w_k`, which its compiler contracts into fused multiply-adds:
    each step is emulated exactly enough (the float32 product is exact in float64, one rounding to float32
    after the add) to give bit-identical results, at ~2x the cost of a plain float32 sum (which would be off
    by up to ~1e-6).
    """
    in_size = planes.shape[axis]
    if in_size == out_size:
        return planes  # torch skips a dimension whose size does not change
    first, weights = antialias_taps(in_size, out_size)
    shape = [1] * planes.ndim
    shape[axis] = out_size
    out = np.take(planes, np.minimum(first, in_size - 1), axis=axis) * weights[:, 0].reshape(shape)
    step = np.empty(out.shape, np.float64)
    for k in range(1, weights.shape[1]):
        index = np.minimum(first + k, in_size - 1)
        np.multiply(
            np.take(planes, index, axis=axis), weights[:, k].astype(np.float64).reshape(shape), out=step
        )
        step += out
        out[...] = step
    return out


def resize_antialias(planes: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """torch `F.interpolate(mode="bilinear", align_corners=False, antialias=True)` on CPU, in numpy.

    planes: float32 [C, H, W]. size_hw: (out_h, out_w). Returns float32 [C, out_h, out_w]. Width is
    resampled first, then height, as torch's separable kernel does.
    """
    planes = np.asarray(planes, dtype=np.float32)
    assert planes.ndim == 3, planes.shape
    resized = _resize_axis_antialias(planes, int(size_hw[1]), axis=2)
    return np.ascontiguousarray(_resize_axis_antialias(resized, int(size_hw[0]), axis=1), dtype=np.float32)


def preprocess_sam2(image_u8: np.ndarray) -> np.ndarray:
    """SAM2's encoder input from a raw image, equal to `SAM2ImagePredictor.set_image`'s tensor.

    image_u8: uint8 [H, W, 3] RGB, image frame.
    Returns float32 [1, 3, 1024, 1024]: squashed to 1024 x 1024 (aspect not kept), ImageNet-normalised.
    """
    if not isinstance(image_u8, np.ndarray) or image_u8.dtype != np.uint8:
        raise ValueError(
            f"image must be a uint8 numpy array, got {getattr(image_u8, 'dtype', type(image_u8))}"
        )
    if image_u8.ndim != 3 or image_u8.shape[2] != 3 or image_u8.shape[0] == 0 or image_u8.shape[1] == 0:
        raise ValueError(f"image must be [H, W, 3] RGB with H, W > 0, got shape {image_u8.shape}")
    planes = image_u8.transpose(2, 0, 1).astype(np.float32) / np.float32(255)  # [3, H, W] in [0, 1]
    resized = resize_antialias(planes, (SAM2_IMAGE_SIZE, SAM2_IMAGE_SIZE))
    normalised = (resized - SAM2_MEAN[:, None, None]) / SAM2_STD[:, None, None]
    return normalised[None].astype(np.float32, copy=False)


def sam2_point_coords(coords_xy: np.ndarray, height: int, width: int) -> np.ndarray:
    """Prompt points from the image frame to SAM2's 1024 frame.

    coords_xy: float [..., 2] (x, y) in pixels of the [height, width] image (e.g. [B, P, 2]).
    Returns float32 of the same shape: (x / width * 1024, y / height * 1024), rounded as sam2 rounds.
    """
    coords = np.array(coords_xy, dtype=np.float32)  # a float32 copy, as torch.as_tensor(dtype=float)
    if coords.ndim == 0 or coords.shape[-1] != 2:
        raise ValueError(f"coords must have a last dimension of 2 (x, y), got shape {coords.shape}")
    coords[..., 0] = coords[..., 0] / np.float32(width)
    coords[..., 1] = coords[..., 1] / np.float32(height)
    return coords * np.float32(SAM2_IMAGE_SIZE)


def sam2_box_points(boxes: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Box prompts as SAM2's corner points.

    boxes: float [B, 4] (x0, y0, x1, y1) in pixels of the [height, width] image.
    Returns (corners float32 [B, 2, 2] in the 1024 frame, labels int32 [B, 2] = (2, 3)); the predictor puts
    these two points before a prompt's other points.
    """
    boxes = np.asarray(boxes)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be [B, 4] (x0, y0, x1, y1), got shape {boxes.shape}")
    corners = sam2_point_coords(boxes.reshape(-1, 2, 2), height, width)
    labels = np.broadcast_to(np.array(SAM2_BOX_LABELS, np.int32), (boxes.shape[0], 2)).copy()
    return corners, labels
