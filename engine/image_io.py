"""Reading user images into uint8 RGB arrays and writing outputs atomically."""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from clipsam.engine.errors import InputImageError, OutputPathError

# A truncated file must fail, not decode as grey padding.
ImageFile.LOAD_TRUNCATED_IMAGES = False

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def load_image(path: Path | str) -> np.ndarray:
    """Read an image file as uint8 [H, W, 3] RGB in its display orientation (EXIF rotation applied).

    Grayscale, RGBA / LA (alpha dropped), palette, CMYK and 16-bit images are converted.
    Raises InputImageError for a missing path, a directory, an empty, truncated or non-image file.
    """
    path = Path(path)
    if not path.exists():
        raise InputImageError(f"image '{path}' does not exist")
    if path.is_dir():
        raise InputImageError(f"image '{path}' is a directory, not an image file")
    if path.stat().st_size == 0:
        raise InputImageError(f"image '{path}' is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
                image = ImageOps.exif_transpose(image)
                return to_rgb_u8(image)
    except UnidentifiedImageError as err:
        raise InputImageError(f"'{path}' is not an image file Pillow can read") from err
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as err:
        raise InputImageError(f"image '{path}' is corrupt or truncated ({err})") from err


def to_rgb_u8(image: Image.Image) -> np.ndarray:
    """Convert any Pillow image mode to uint8 [H, W, 3] RGB."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        data = np.asarray(image).astype(np.int64)
        if image.mode == "I" and data.max(initial=0) <= 255:
            gray = data.clip(0, 255).astype(np.uint8)
        else:
            gray = (data.clip(0, 65535) >> 8).astype(np.uint8)  # 16-bit → top 8 bits
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode == "F":
        data = np.asarray(image, dtype=np.float32)
        gray = np.clip(data, 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode in ("P", "PA"):
        image = image.convert("RGBA")
    return np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))


@contextmanager
def atomic_output(path: Path | str, mode: str = "wb") -> Iterator:
    """Open a temp file beside `path`; it replaces `path` only when the block finishes without error."""
    path = Path(path)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, mode) as stream:
            yield stream
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def write_atomic(path: Path | str, writer: Callable[[object], None], mode: str = "wb") -> None:
    """Call writer(stream) on a temp file and rename it to `path`."""
    with atomic_output(path, mode) as stream:
        writer(stream)


def check_writable(path: Path | str, suffixes: tuple[str, ...] | None = None) -> Path:
    """Fail early (before any model runs) when `path` cannot be written or has an unsupported suffix."""
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(f"output '{path}' is a directory; give a file name")
    if suffixes is not None and path.suffix.lower() not in suffixes:
        raise OutputPathError(f"output '{path}' must end with one of {', '.join(suffixes)}")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputPathError(f"cannot write '{path}': folder '{parent}' does not exist")
    try:
        probe, probe_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=parent)
    except OSError as err:
        raise OutputPathError(f"cannot write '{path}': {err.strerror or err}") from err
    os.close(probe)
    Path(probe_name).unlink(missing_ok=True)
    return path
