"""`--images` inputs: folders (recursive, by content, hidden skipped), globs, .txt lists; sorted names; the
usage errors (no image, two images with one name)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from clipsam.engine.batch.sources import collect_images, image_format
from clipsam.engine.errors import ClipsamError
from tests.conftest import rng_image


def _save(path: Path, fmt: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng_image(8, 8)).save(path, format=fmt)
    return path


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    _save(root / "b.png", "PNG")
    _save(root / "a" / "z.jpg", "JPEG")
    _save(root / "a" / "y.webp", "WEBP")
    _save(root / "c" / "scan.tif", "TIFF")
    _save(root / "c" / "old.bmp", "BMP")
    _save(root / "no_suffix", "PNG")  # by content, not by name
    _save(root / ".hidden.png", "PNG")
    _save(root / ".cache" / "x.png", "PNG")
    (root / "notes.txt").write_text("not an image\n")
    (root / "fake.png").write_text("text with an image's name")
    return root


def test_a_folder_gives_every_image_by_content_sorted_and_skips_hidden_ones(tree: Path) -> None:
    items = collect_images([str(tree)])
    assert [item.name for item in items] == [
        "a/y.webp", "a/z.jpg", "b.png", "c/old.bmp", "c/scan.tif", "no_suffix",
    ]  # fmt: skip
    assert all(item.path == tree / item.name for item in items)
    assert [image_format(item.path) for item in items] == ["webp", "jpeg", "png", "bmp", "tiff", "png"]


def test_a_glob_names_images_from_its_fixed_prefix(tree: Path) -> None:
    items = collect_images([f"{tree}/**/*.jpg", f"{tree}/b.png"])
    assert [item.name for item in items] == ["a/z.jpg", "b.png"]


def test_a_list_file_reads_one_path_per_line_relative_to_itself(tree: Path, tmp_path: Path) -> None:
    listing = tree / "list.txt"
    listing.write_text(f"# wanted\nb.png\n\na/z.jpg\n{tree / 'c' / 'old.bmp'}\n")
    assert [item.name for item in collect_images([str(listing)])] == ["a/z.jpg", "b.png", "old.bmp"]
    (tree / "bad.txt").write_text("missing.png\n")
    with pytest.raises(ClipsamError, match=r"bad.txt:1: no such image file: missing.png"):
        collect_images([str(tree / "bad.txt")])


def test_usage_errors_are_one_clear_message(tree: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ClipsamError, match="no image"):
        collect_images([str(empty)])
    with pytest.raises(ClipsamError, match="no such file, folder or matching glob"):
        collect_images([str(tmp_path / "absent")])
    other = _save(tmp_path / "elsewhere" / "b.png", "PNG")
    with pytest.raises(ClipsamError, match="same outputs 'b.png'"):
        collect_images([str(tree), str(other)])
