"""Text-feature cache: hits cost nothing, rows are shared per query, corrupt files are recomputed."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest

from clipsam.engine.text.bank import OPENAI_IMAGENET_TEMPLATES, TextBank, default_cache_dir, text_cache_key


class CountingEncoder:
    """A fake text encoder: deterministic features per query, and a count of calls."""

    def __init__(self, dim: int = 8):
        self.calls = 0
        self.dim = dim

    def __call__(self, queries: list[str]) -> np.ndarray:
        self.calls += 1
        rows = [np.random.default_rng(zlib.crc32(q.encode())).standard_normal(self.dim) for q in queries]
        return np.stack(rows).astype(np.float32)


def test_templates_are_openais_eighty() -> None:
    assert len(OPENAI_IMAGENET_TEMPLATES) == 80 == len(set(OPENAI_IMAGENET_TEMPLATES))
    assert OPENAI_IMAGENET_TEMPLATES[0] == "a bad photo of a {}."
    assert all(template.count("{}") == 1 for template in OPENAI_IMAGENET_TEMPLATES)


def test_second_get_is_a_cache_hit(tmp_path: Path) -> None:
    encoder = CountingEncoder()
    bank = TextBank(tmp_path)
    first = bank.get("sha-a", ["cat", "dog"], encoder)
    second = TextBank(tmp_path).get("sha-a", ["cat", "dog"], encoder)  # a new process would see the same
    assert encoder.calls == 1
    assert second.dtype == np.float32 and second.shape == (2, 8)
    np.testing.assert_array_equal(first, second)
    files = sorted(p.name for p in (tmp_path / "text").iterdir())
    assert files == sorted(bank.path_for("sha-a", q).name for q in ("cat", "dog"))  # no temp files left


def test_vocabularies_share_cached_queries(tmp_path: Path) -> None:
    calls = []

    def encoder(queries: list[str]) -> np.ndarray:
        calls.append(list(queries))
        return CountingEncoder()(queries)

    bank = TextBank(tmp_path)
    first = bank.get("w", ["sky", "wall", "cat"], encoder)
    second = bank.get("w", ["sky", "wall", "dog", "cat"], encoder)
    assert calls == [["sky", "wall", "cat"], ["dog"]]
    np.testing.assert_array_equal(second[[0, 1, 3]], first)
    np.testing.assert_array_equal(second[2], CountingEncoder()(["dog"])[0])


def test_key_covers_weights_queries_and_templates(tmp_path: Path) -> None:
    encoder = CountingEncoder()
    bank = TextBank(tmp_path)
    bank.get("random-init:ViT-B-16:seed=0", ["cat", "dog"], encoder)
    bank.get("random-init:ViT-B-16:seed=1", ["cat", "dog"], encoder)
    TextBank(tmp_path, templates=("a photo of a {}.",)).get(
        "random-init:ViT-B-16:seed=0", ["cat", "dog"], encoder
    )
    bank.get("random-init:ViT-B-16:seed=0", ["dog", "cat"], encoder)  # same queries, other order: cached
    assert encoder.calls == 3
    assert text_cache_key("w", "a", ["t {}"]) != text_cache_key("w", "a", ["t {}."])


@pytest.mark.parametrize(
    "damage", [b"", b"garbage that is not npy", "wrong-shape", "wrong-width", "wrong-dtype"]
)
def test_corrupt_cache_file_is_recomputed(tmp_path: Path, damage) -> None:
    encoder = CountingEncoder()
    bank = TextBank(tmp_path)
    expected = bank.get("w", ["cat", "dog"], encoder)
    path = bank.path_for("w", "dog")
    if damage == "wrong-shape":
        np.save(path, np.zeros((3, 8), np.float32))
    elif damage == "wrong-width":  # a stale row of another model: all rows are recomputed
        np.save(path, np.ones(4, np.float32))
    elif damage == "wrong-dtype":
        np.save(path, expected[1].astype(np.float64))
    else:
        path.write_bytes(damage)
    np.testing.assert_array_equal(bank.get("w", ["cat", "dog"], encoder), expected)
    assert encoder.calls == 2
    np.testing.assert_array_equal(np.load(path), expected[1])  # and the file is repaired


def test_unwritable_cache_only_warns(tmp_path: Path) -> None:
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    with pytest.warns(UserWarning, match="not written"):
        features = TextBank(blocker).get("w", ["cat"], CountingEncoder())
    assert features.shape == (1, 8)


def test_default_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CLIPSAM_CACHE_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path and TextBank().text_dir == tmp_path / "text"
    monkeypatch.delenv("CLIPSAM_CACHE_DIR")
    assert default_cache_dir() == Path.home() / ".cache" / "clipsam"
