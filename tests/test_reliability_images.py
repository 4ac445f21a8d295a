"""Hostile and odd input images: refused in one line for the right reason, before any decoding or model."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipsam.engine.errors import InputImageError
from clipsam.engine.image_io import DEFAULT_MAX_PIXELS, load_image
from tests.cli_helpers import run_cli
from tests.reliability_helpers import assert_folder_holds, assert_single_line, small_png


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width × height but holds almost no data (a decompression bomb's shape):
    only a reader that trusts the header before decoding refuses it cheaply."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


@pytest.mark.parametrize(("width", "height"), [(20000, 20000), (12000, 12000), (8000, 5001)])
def test_large_images_are_refused_by_pixel_count_before_decoding(tmp_path, width, height):
    path = png_header_only(tmp_path / "big.png", width, height)
    with pytest.raises(InputImageError) as info:
        load_image(path)
    message = str(info.value)
    assert f"{width * height:,}" in message and f"{DEFAULT_MAX_PIXELS:,}" in message
    assert "--max-pixels" in message and "corrupt" not in message


def test_max_pixels_raises_and_lowers_the_limit(tmp_path):
    path = small_png(tmp_path / "a.png", 40, 50)
    with pytest.raises(InputImageError, match="2,000 pixels, more than the limit of 1,999"):
        load_image(path, max_pixels=1999)
    assert load_image(path, max_pixels=2000).shape == (40, 50, 3)
    # Above Pillow's own bomb limit (2 × 89.5 MP) the header check is ours alone: refused with our message.
    big = png_header_only(tmp_path / "big.png", 20000, 20000)
    with pytest.raises(InputImageError, match="corrupt or truncated"):
        load_image(big, max_pixels=400_000_000)  # allowed by count; the data then really is missing
    assert Image.MAX_IMAGE_PIXELS is not None  # Pillow's global limit is left as it was


def test_cli_refuses_a_large_image_with_the_option_to_raise_it(tmp_path, capsys):
    image = png_header_only(tmp_path / "big.png", 20000, 20000)
    out = tmp_path / "out"
    out.mkdir()
    args = ["segment", "--image", image, "-V", "sky", "--output", out / "o.png", "--random-weights"]
    code, _, err = run_cli(args, capsys)
    assert_single_line(code, err, 2, "clipsam: error: ", "more than the limit of 40,000,000")
    assert "--max-pixels" in err
    args = ["dense", "--image", image, "-V", "sky", "--out", out / "d.npz", "--random-weights"]
    code, _, err = run_cli([*args, "--max-pixels", "1000"], capsys)
    assert_single_line(code, err, 2, "clipsam: error: ", "limit of 1,000")
    assert_folder_holds(out, set())


def _corrupt_jpeg(path: Path) -> Path:
    Image.fromarray(np.full((64, 64, 3), 120, np.uint8)).save(path, quality=90)
    data = bytearray(path.read_bytes())
    data[len(data) // 2 :] = b"\xff" * (len(data) - len(data) // 2)
    path.write_bytes(bytes(data))
    return path


def _odd_file(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.png"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "symlink_loop":
        os.symlink(tmp_path / "loop_b.png", path)
        os.symlink(path, tmp_path / "loop_b.png")
    elif kind == "through_a_file":
        small_png(tmp_path / "plain.png")
        path = tmp_path / "plain.png" / "inner.png"
    elif kind == "corrupt_jpeg":
        path = _corrupt_jpeg(tmp_path / "c.jpg")
    elif kind == "truncated_png":
        small_png(path, 64, 64)
        path.write_bytes(path.read_bytes()[:-200])
    elif kind == "png_signature_only":
        path.write_bytes(b"\x89PNG\r\n\x1a\n")
    elif kind == "zero_by_zero":
        png_header_only(path, 0, 0)
    elif kind == "text_named_png":
        path.write_text("not an image\n")
    elif kind == "zero_bytes":
        path.write_bytes(b"")
    return path


@pytest.mark.parametrize(
    ("kind", "fragment"),
    [
        ("fifo", "not a regular file"),
        ("symlink_loop", "symbolic links"),
        ("through_a_file", "not a directory"),
        ("corrupt_jpeg", "corrupt or truncated"),
        ("truncated_png", "corrupt or truncated"),
        ("png_signature_only", "not an image"),
        ("zero_by_zero", "not an image"),
        ("text_named_png", "not an image"),
        ("zero_bytes", "empty"),
    ],
)
def test_odd_files_are_one_line_errors(tmp_path, capsys, kind, fragment):
    image = _odd_file(tmp_path, kind)
    out = tmp_path / "out"
    out.mkdir()
    args = ["segment", "--image", image, "-V", "sky", "--output", out / "o.png", "--random-weights"]
    code, _, err = run_cli(args, capsys)
    assert_single_line(code, err, 2, "clipsam: error: ", fragment)
    assert_folder_holds(out, set())


def test_one_pixel_and_one_row_images_load(tmp_path):
    for height, width in ((1, 1), (1, 300), (300, 1)):
        path = small_png(tmp_path / f"{height}x{width}.png", height, width)
        assert load_image(path).shape == (height, width, 3)


def test_one_pixel_image_runs_the_dense_map(tmp_path, capsys, tiny_clip_checkpoint):
    """1×1 through SCLIP's sliding windows: a map of the image's size, not a crash."""
    image = small_png(tmp_path / "dot.png", 1, 1)
    out = tmp_path / "d.npz"
    args = ["dense", "--image", image, "-V", "sky", "-V", "car", "--clip-checkpoint", tiny_clip_checkpoint]
    code, _, err = run_cli([*args, "--out", out], capsys)
    assert code == 0, err
    with np.load(out) as saved:
        assert saved["probs"].shape == (2, 1, 1) and saved["pred"].shape == (1, 1)
