"""Reading user images into uint8 RGB arrays; checking output paths before any model runs.

The writing itself (temp files, modes, all-or-nothing renames) lives in engine/outputs.py; atomic_output
is re-exported here for the modules that import it from image_io.
"""

from __future__ import annotations

import os
import stat
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from clipsam.engine.errors import InputImageError, OutputPathError
from clipsam.engine.outputs import atomic_output, temp_file_beside

# A truncated file must fail, not decode as grey padding.
ImageFile.LOAD_TRUNCATED_IMAGES = False

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
DEFAULT_MAX_PIXELS = (
    40_000_000  # 40 MP (e.g. 8000×5000): refused before decoding unless --max-pixels says more
)
_RAISE_HINT = "raise the limit with --max-pixels N if the image is genuine"
_PILLOW_LIMIT_LOCK = threading.Lock()
# What Pillow's decoders raise on damaged data (besides UnidentifiedImageError at open).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, TypeError, KeyError)
__all__ = [
    "atomic_output",
    "check_output_folder",
    "check_writable",
    "load_image",
    "to_rgb_u8",
    "write_atomic",
]


def load_image(path: Path | str, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file as uint8 [H, W, 3] RGB in its display orientation (EXIF rotation applied).

    Grayscale, RGBA / LA (alpha dropped), palette, CMYK and 16-bit images are converted. An image of more
    than `max_pixels` pixels is refused from its header, before any decoding.
    Raises InputImageError for a missing path, a directory or other non-regular file, an unreadable, empty,
    too large, truncated or non-image file.
    """
    path = Path(path)
    _check_image_file(path)
    try:
        with open(path, "rb") as handle, _open_without_pillow_limit(handle) as image:
            check_pixel_count(path, image.size, max_pixels)
            image.load()
            return to_rgb_u8(ImageOps.exif_transpose(image))
    except PermissionError as err:
        raise InputImageError(f"cannot read image '{path}': {err.strerror}") from err
    except UnidentifiedImageError as err:
        raise InputImageError(f"'{path}' is not an image file Pillow can read") from err
    except (
        Image.DecompressionBombError
    ) as err:  # a later frame of a multi-frame file, past Pillow's own limit
        raise InputImageError(f"image '{path}' is too large ({err}); {_RAISE_HINT}") from err
    except _DECODE_ERRORS as err:
        raise InputImageError(f"image '{path}' is corrupt or truncated ({_first_line(err)})") from err


def check_pixel_count(path: Path, size: tuple[int, int], max_pixels: int) -> None:
    """Refuse an image of width × height > max_pixels (InputImageError naming the limit and the option)."""
    width, height = size
    if width * height > max_pixels:
        raise InputImageError(
            f"image '{path}' has {width}×{height} = {width * height:,} pixels, more than the limit of "
            f"{max_pixels:,}; {_RAISE_HINT}"
        )


def _check_image_file(path: Path) -> None:
    try:
        info = path.stat()
    except FileNotFoundError:
        raise InputImageError(f"image '{path}' does not exist") from None
    except OSError as err:  # a symlink loop, a path through a file, no permission on a folder
        raise InputImageError(f"cannot read image '{path}': {err.strerror}") from None
    if stat.S_ISDIR(info.st_mode):
        raise InputImageError(f"image '{path}' is a directory, not an image file")
    if not stat.S_ISREG(info.st_mode):  # a FIFO would block the reader forever; a device never ends
        raise InputImageError(f"image '{path}' is not a regular file")
    if info.st_size == 0:
        raise InputImageError(f"image '{path}' is empty (0 bytes)")


@contextmanager
def _open_without_pillow_limit(handle) -> Iterator[Image.Image]:
    """Image.open (header only) with Pillow's decompression-bomb limit lifted for this call: clipsam's own
    limit (check_pixel_count, --max-pixels) decides, with a message that says how to raise it."""
    with _PILLOW_LIMIT_LOCK:
        pillow_limit = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            image = Image.open(handle)
        finally:
            Image.MAX_IMAGE_PIXELS = pillow_limit
    with image:
        yield image


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


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


def write_atomic(path: Path | str, writer: Callable[[object], None], mode: str = "wb") -> None:
    """Call writer(stream) on a temp file and rename it to `path`."""
    with atomic_output(path, mode) as stream:
        writer(stream)


def check_writable(path: Path | str, suffixes: tuple[str, ...] | None = None) -> Path:
    """Fail early (before any model runs) when `path` cannot be written or has an unsupported suffix."""
    path = Path(path)
    try:  # is_dir raises for a name too long or a symlink loop
        if path.is_dir():
            raise OutputPathError(f"output '{path}' is a directory; give a file name")
        parent_exists = path.parent.is_dir()
    except OSError as err:
        raise OutputPathError(f"cannot write '{path}': {err.strerror or err}") from err
    if suffixes is not None and path.suffix.lower() not in suffixes:
        raise OutputPathError(f"output '{path}' must end with one of {', '.join(suffixes)}")
    if not parent_exists:
        raise OutputPathError(f"cannot write '{path}': folder '{path.parent}' does not exist")
    _probe_write(path, f"cannot write '{path}'")
    return path


def check_output_folder(folder: Path | str, what: str = "--out") -> Path:
    """Create `folder` if needed and prove it writable, before any model runs (OutputPathError otherwise)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputPathError(f"{what} '{folder}' exists and is not a folder; give a folder path")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputPathError(f"cannot create {what} folder '{folder}': {err.strerror or err}") from err
    _probe_write(folder / ".clipsam-write-probe", f"cannot write into {what} folder '{folder}'")
    return folder


def _probe_write(path: Path, failure: str) -> None:
    try:
        probe, probe_path = temp_file_beside(path)
    except OSError as err:
        raise OutputPathError(f"{failure}: {err.strerror or err}") from err
    os.close(probe)
    probe_path.unlink(missing_ok=True)
