"""Class vocabularies: one class per line, synonyms separated by ", " (SCLIP's class-file format).

Each synonym is a text query; a class scores the max over its synonyms' probabilities.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipsam.engine.errors import VocabularyError

# SCLIP's background class for VOC21 and COCO-Object: stuff words that soak up everything that is no object.
BACKGROUND_SYNONYMS: tuple[str, ...] = (
    "sky", "wall", "tree", "wood", "grass", "road", "sea", "river", "mountain", "sands", "desk", "bed",
    "building", "cloud", "lamp", "door", "window", "wardrobe", "ceiling", "shelf", "curtain", "stair",
    "floor", "hill", "rail", "fence",
)  # fmt: skip
BACKGROUND_LINE = ", ".join(BACKGROUND_SYNONYMS)


@dataclass(frozen=True)
class Vocabulary:
    """Classes and their text queries.

    class_names: C display names (a class's first synonym); index 0 is the background when there is one.
    synonyms: C tuples, every query of each class, in line order.
    queries: Q query words, all classes' synonyms flattened in class order.
    query_class: int64 [Q], the class index of each query (non-decreasing).
    """

    class_names: tuple[str, ...]
    synonyms: tuple[tuple[str, ...], ...]
    queries: tuple[str, ...]
    query_class: np.ndarray

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_queries(self) -> int:
        return len(self.queries)

    @staticmethod
    def from_lines(lines: Iterable[str]) -> Vocabulary:
        """Parse class lines; raises VocabularyError for an empty vocabulary, an empty line or synonym, or a
        duplicate class name (case-insensitive)."""
        synonyms = tuple(_parse_line(line, number) for number, line in enumerate(lines, start=1))
        if not synonyms:
            raise VocabularyError("the vocabulary is empty: give at least one class")
        _check_unique_names(synonyms)
        queries = tuple(word for words in synonyms for word in words)
        query_class = np.repeat(np.arange(len(synonyms), dtype=np.int64), [len(words) for words in synonyms])
        return Vocabulary(
            class_names=tuple(words[0] for words in synonyms),
            synonyms=synonyms,
            queries=queries,
            query_class=query_class,
        )

    @staticmethod
    def from_file(path: Path | str) -> Vocabulary:
        """Read a class file (UTF-8, one class per line). Trailing blank lines are ignored."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise VocabularyError(f"class file '{path}' does not exist") from None
        except (OSError, UnicodeDecodeError) as err:
            raise VocabularyError(f"class file '{path}' cannot be read as UTF-8 text ({err})") from None
        lines = text.rstrip().splitlines()
        try:
            return Vocabulary.from_lines(lines)
        except VocabularyError as err:
            raise VocabularyError(f"class file '{path}': {err}") from None

    @staticmethod
    def from_words(words: Sequence[str]) -> Vocabulary:
        """One class per word (a word may hold ", "-separated synonyms), e.g. `--vocabulary cat dog`."""
        return Vocabulary.from_lines(words)


def with_background(names: Sequence[str]) -> list[str]:
    """Class lines with SCLIP's background line prepended as class 0.

    Background synonyms that the user also names (e.g. "tree") are left out of the background line, so the
    user's class is not shadowed by an identical background query.
    """
    user_words = {word.strip().lower() for name in names for word in name.split(",")}
    kept = [word for word in BACKGROUND_SYNONYMS if word not in user_words]
    background = ", ".join(kept) if kept else "background"
    return [background, *names]


def _parse_line(line: str, number: int) -> tuple[str, ...]:
    words = tuple(word.strip() for word in line.strip().split(","))
    if not line.strip():
        raise VocabularyError(f"line {number} of the vocabulary is empty: remove it or name a class")
    if any(not word for word in words):
        raise VocabularyError(f"line {number} of the vocabulary ('{line.strip()}') has an empty synonym")
    return words


def _check_unique_names(synonyms: Sequence[tuple[str, ...]]) -> None:
    seen: dict[str, int] = {}
    for index, words in enumerate(synonyms):
        key = words[0].lower()
        if key in seen:
            raise VocabularyError(
                f"duplicate class name '{words[0]}' (classes {seen[key]} and {index}): give each class once"
            )
        seen[key] = index
