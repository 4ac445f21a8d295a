"""Class vocabularies: one class per line, synonyms separated by ", " (SCLIP's class-file format).

Each synonym is a text query; a class scores the max over its synonyms' probabilities. A user's class that is
exactly "background" (a `--vocabulary` word or a `--class-file` line, one rule for both: `user_vocabulary`)
becomes class 0 with SCLIP's background synonyms. Names in messages are quoted with repr, so invisible
characters (a BOM, a zero-width space) show.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
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
BACKGROUND_NAME = "background"


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
            return Vocabulary.from_lines(read_class_lines(path))
        except VocabularyError as err:
            raise VocabularyError(f"class file '{path}': {err}") from None

    @staticmethod
    def from_words(words: Sequence[str]) -> Vocabulary:
        """One class per word (a word may hold ", "-separated synonyms), e.g. `--vocabulary cat dog`."""
        return Vocabulary.from_lines(words)


def read_class_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 class file, a leading byte-order mark removed, trailing blank lines dropped."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise VocabularyError(f"class file '{path}' does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise VocabularyError(f"class file '{path}' cannot be read as UTF-8 text ({err})") from None
    return text.rstrip().splitlines()


def user_vocabulary(names: Sequence[str]) -> Vocabulary:
    """The vocabulary of a user's class names (`--vocabulary` words or `--class-file` lines).

    A name that is exactly "background" (any case) becomes class 0 with SCLIP's background synonyms (minus
    words the user names as classes), displayed as "background"; the other names keep their order.
    """
    background_count = sum(name.strip().lower() == BACKGROUND_NAME for name in names)
    if background_count > 1:
        raise VocabularyError(f"duplicate class name {BACKGROUND_NAME!r}: give each class once")
    others = [name for name in names if name.strip().lower() != BACKGROUND_NAME]
    if background_count == 0:
        return Vocabulary.from_lines(others)
    vocabulary = Vocabulary.from_lines(with_background(others))
    return replace(vocabulary, class_names=(BACKGROUND_NAME, *vocabulary.class_names[1:]))


def user_class_file(path: Path | str) -> Vocabulary:
    """`--class-file`: its lines under the rules of `user_vocabulary`."""
    path = Path(path)
    try:
        return user_vocabulary(read_class_lines(path))
    except VocabularyError as err:
        raise VocabularyError(f"class file '{path}': {err}") from None


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
        raise VocabularyError(f"line {number} of the vocabulary ({line.strip()!r}) has an empty synonym")
    return words


def _check_unique_names(synonyms: Sequence[tuple[str, ...]]) -> None:
    seen: dict[str, int] = {}
    for index, words in enumerate(synonyms):
        key = words[0].lower()
        if key in seen:
            raise VocabularyError(
                f"duplicate class name {words[0]!r} (classes {seen[key]} and {index}): give each class once"
            )
        seen[key] = index
