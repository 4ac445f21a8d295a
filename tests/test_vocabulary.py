"""Class lines with synonyms, the background line, and one-line errors for bad vocabularies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clipsam.engine.errors import VocabularyError
from clipsam.engine.vocabulary import BACKGROUND_LINE, BACKGROUND_SYNONYMS, Vocabulary, with_background


def test_synonyms_map_queries_to_classes() -> None:
    vocabulary = Vocabulary.from_lines(["background, wall, floor\n", "cat", "bicycle,bike", " tree "])
    assert vocabulary.class_names == ("background", "cat", "bicycle", "tree")
    assert vocabulary.queries == ("background", "wall", "floor", "cat", "bicycle", "bike", "tree")
    assert vocabulary.query_class.dtype == np.int64
    assert vocabulary.query_class.tolist() == [0, 0, 0, 1, 2, 2, 3]
    assert vocabulary.synonyms[2] == ("bicycle", "bike")
    assert (vocabulary.num_classes, vocabulary.num_queries) == (4, 7)


def test_background_line_is_sclips() -> None:
    assert len(BACKGROUND_SYNONYMS) == 26
    assert BACKGROUND_LINE.startswith("sky, wall, tree, wood,") and BACKGROUND_LINE.endswith("rail, fence")


def test_with_background_prepends_class_zero_and_unshadows_user_words() -> None:
    lines = with_background(["cat", "Tree, bush"])
    vocabulary = Vocabulary.from_lines(lines)
    assert vocabulary.class_names == ("sky", "cat", "Tree")
    assert "tree" not in vocabulary.synonyms[0] and len(vocabulary.synonyms[0]) == 25
    assert with_background(["dog"])[0] == BACKGROUND_LINE


def test_from_file_and_from_words(tmp_path: Path) -> None:
    path = tmp_path / "classes.txt"
    path.write_text("person, man\ncar\n\n", encoding="utf-8")
    from_file = Vocabulary.from_file(path)
    assert from_file.class_names == ("person", "car") and from_file.queries == ("person", "man", "car")
    assert Vocabulary.from_words(["person, man", "car"]).queries == from_file.queries


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([], "empty"),
        (["cat", "", "dog"], "line 2 .* empty"),
        (["cat, , kitten"], "empty synonym"),
        (["Cat", "dog", "cat"], "duplicate class name 'cat'"),
    ],
)
def test_bad_vocabularies_fail_with_one_line(lines: list[str], message: str) -> None:
    with pytest.raises(VocabularyError, match=message) as caught:
        Vocabulary.from_lines(lines)
    assert "\n" not in str(caught.value)


def test_bad_class_files(tmp_path: Path) -> None:
    with pytest.raises(VocabularyError, match="does not exist"):
        Vocabulary.from_file(tmp_path / "missing.txt")
    with pytest.raises(VocabularyError, match="cannot be read"):
        Vocabulary.from_file(tmp_path)  # a directory
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00cat")
    with pytest.raises(VocabularyError, match="cannot be read"):
        Vocabulary.from_file(binary)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(VocabularyError, match=r"empty\.txt.*empty"):
        Vocabulary.from_file(empty)
