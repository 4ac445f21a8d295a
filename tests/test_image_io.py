"""load_image: every common image flavour is accepted and converted; broken files are one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipsam.engine.errors import InputImageError, OutputPathError
from clipsam.engine.image_io import atomic_output, check_writable, load_image

RGB = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3) * 3


def _save(image: Image.Image, path: Path, **kwargs) -> Path:
    image.save(path, **kwargs)
    return path


def test_rgb_png_round_trips(tmp_path):
    loaded = load_image(_save(Image.fromarray(RGB), tmp_path / "a.png"))
    assert loaded.dtype == np.uint8 and loaded.shape == (4, 6, 3)
    np.testing.assert_array_equal(loaded, RGB)


def test_grayscale_becomes_three_equal_channels(tmp_path):
    gray = RGB[:, :, 0]
    loaded = load_image(_save(Image.fromarray(gray, "L"), tmp_path / "g.png"))
    np.testing.assert_array_equal(loaded, np.repeat(gray[:, :, None], 3, axis=2))


def test_rgba_drops_alpha(tmp_path):
    rgba = np.dstack([RGB, np.full(RGB.shape[:2], 7, np.uint8)])
    loaded = load_image(_save(Image.fromarray(rgba, "RGBA"), tmp_path / "a.png"))
    np.testing.assert_array_equal(loaded, RGB)


def test_16bit_png_keeps_the_top_8_bits(tmp_path):
    deep = (np.arange(24, dtype=np.uint16).reshape(4, 6) * 2731).astype(np.uint16)
    path = _save(Image.fromarray(deep), tmp_path / "d.png")
    assert Image.open(path).mode.startswith("I")
    loaded = load_image(path)
    np.testing.assert_array_equal(loaded[:, :, 0], (deep >> 8).astype(np.uint8))


def test_palette_image_uses_its_palette(tmp_path):
    palette_image = Image.fromarray(RGB).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    path = _save(palette_image, tmp_path / "p.png")
    np.testing.assert_array_equal(load_image(path), np.asarray(palette_image.convert("RGB")))


def test_cmyk_jpeg_is_converted_to_rgb(tmp_path):
    cmyk = Image.fromarray(RGB).convert("CMYK")
    path = _save(cmyk, tmp_path / "c.jpg", quality=95)
    loaded = load_image(path)
    assert loaded.shape == (4, 6, 3)
    np.testing.assert_array_equal(loaded, np.asarray(Image.open(path).convert("RGB")))


def test_exif_orientation_is_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise for display
    path = _save(Image.fromarray(RGB), tmp_path / "r.jpg", exif=exif, quality=100)
    loaded = load_image(path)
    assert loaded.shape == (6, 4, 3)  # width and height swapped


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda p: p, "does not exist"),
        (lambda p: (p.mkdir(), p)[1], "is a directory"),
        (lambda p: (p.write_bytes(b""), p)[1], "empty"),
        (lambda p: (p.write_text("not an image at all"), p)[1], "not an image"),
    ],
    ids=["missing", "directory", "empty", "text"],
)
def test_unreadable_inputs_raise_one_line(tmp_path, make, fragment):
    path = make(tmp_path / "input.png")
    with pytest.raises(InputImageError, match=fragment) as info:
        load_image(path)
    assert "\n" not in str(info.value)


def test_truncated_png_is_an_error(tmp_path):
    full = _save(
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)), tmp_path / "f.png"
    )
    cut = tmp_path / "cut.png"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(InputImageError, match="corrupt or truncated"):
        load_image(cut)


def test_atomic_output_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError), atomic_output(target, "w") as stream:
        stream.write("half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_check_writable_rejects_bad_paths(tmp_path):
    with pytest.raises(OutputPathError, match="does not exist"):
        check_writable(tmp_path / "missing" / "o.png", (".png",))
    with pytest.raises(OutputPathError, match="must end with"):
        check_writable(tmp_path / "o.txt", (".png",))
    with pytest.raises(OutputPathError, match="directory"):
        check_writable(tmp_path, None)
    assert check_writable(tmp_path / "o.png", (".png",)) == tmp_path / "o.png"
    assert list(tmp_path.iterdir()) == []
