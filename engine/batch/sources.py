"""The images of a batch: folders (recursive), globs and `.txt` lists, in a deterministic order.

Each image gets a name: its path relative to the folder or the glob's fixed prefix it was found under (a
list's relative entries: relative to the list's folder; a file named directly: its file name). The outputs
mirror the names, so two images with one name are a usage error, as is a batch with no image.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from clipsam.engine.errors import ClipsamError

LIST_SUFFIX = ".txt"
GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True, order=True)
class BatchImage:
    """name: the relative POSIX path that the outputs mirror (sort key); path: where the image is read."""

    name: str
    path: Path


def image_format(path: Path) -> str | None:
    """The image format by content (PNG / JPEG / WebP / TIFF / BMP), None for anything else or unreadable."""
    try:
        with open(path, "rb") as stream:
            head = stream.read(12)
    except OSError:
        return None
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[:2] == b"BM":
        return "bmp"
    return None


def collect_images(sources: Sequence[str]) -> list[BatchImage]:
    """Every image of `sources` (folders, globs, `.txt` lists, image files), sorted by name."""
    found: dict[str, BatchImage] = {}
    for source in sources:
        for item in _source_images(source):
            other = found.setdefault(item.name, item)
            if other.path != item.path:
                raise ClipsamError(
                    f"two images would write the same outputs '{item.name}': {other.path} and {item.path} "
                    "(give their folders separately, or one folder above both)"
                )
    if not found:
        given = ", ".join(sources)
        raise ClipsamError(f"no image (PNG / JPEG / WebP / TIFF / BMP) found in {given}")
    return sorted(found.values())


def _source_images(source: str) -> Iterable[BatchImage]:
    path = Path(source)
    if GLOB_CHARS & set(source) and not path.exists():
        root = _glob_root(source)
        matches = [Path(match) for match in glob.glob(source, recursive=True)]
        return [_named(match, root) for match in matches if _visible(match, root) and _is_image(match)]
    if path.is_dir():
        return [_named(file, path) for file in _walk(path) if _is_image(file)]
    if path.suffix.lower() == LIST_SUFFIX and path.is_file():
        return _listed(path)
    if path.is_file():
        return [BatchImage(path.name, path)]
    raise ClipsamError(f"--images: no such file, folder or matching glob: {source}")


def _listed(list_file: Path) -> list[BatchImage]:
    """A list's entries, one path per line (blank lines and '#' comments skipped); every entry must be an
    image file: a list is what the user asked for, so a missing entry is an error, not a skip."""
    try:
        lines = list_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ClipsamError(f"cannot read the image list {list_file}: {err}") from None
    items = []
    for number, line in enumerate(lines, 1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        relative = not Path(entry).is_absolute()
        path = list_file.parent / entry if relative else Path(entry)
        if not path.is_file():
            raise ClipsamError(f"{list_file}:{number}: no such image file: {entry}")
        name = PurePosixPath(*Path(os.path.normpath(entry)).parts).as_posix() if relative else path.name
        if name.startswith("../"):
            name = path.name
        items.append(BatchImage(name, path))
    return items


def _walk(folder: Path) -> list[Path]:
    files = []
    for root, folders, names in os.walk(folder):
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        files += [Path(root) / name for name in names if not name.startswith(".")]
    return files


def _glob_root(pattern: str) -> Path:
    """The pattern's leading folders without a glob character."""
    parts = []
    for part in Path(pattern).parts[:-1]:
        if GLOB_CHARS & set(part):
            break
        parts.append(part)
    return Path(*parts) if parts else Path(".")


def _visible(path: Path, root: Path) -> bool:
    return not any(part.startswith(".") for part in path.relative_to(root).parts)


def _is_image(path: Path) -> bool:
    return path.is_file() and image_format(path) is not None


def _named(path: Path, root: Path) -> BatchImage:
    return BatchImage(path.relative_to(root).as_posix(), path)
