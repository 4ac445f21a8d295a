"""CLIP's byte-level BPE tokenizer without torch: the token ids open_clip's `SimpleTokenizer` gives.

The merges come from the vocabulary file open_clip ships (`bpe_simple_vocab_16e6.txt.gz`, copied into the
artifacts at export). Text is cleaned as open_clip's default "lower" cleaning does (ftfy's `fix_text`, HTML
unescaped twice, whitespace runs collapsed, lower case) and split with the same Unicode-property pattern
(the `regex` package: \\p{L} / \\p{N}, case-insensitive). ftfy and regex are open_clip's own dependencies,
pinned in constraints.txt; neither imports torch.
"""

from __future__ import annotations

import gzip
import html
import zlib
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import ftfy
import numpy as np
import regex

from clipsam.engine.errors import ClipsamError

VOCABULARY_FILE = "bpe_simple_vocab_16e6.txt.gz"
CONTEXT_LENGTH = 77
START_OF_TEXT = "<start_of_text>"
END_OF_TEXT = "<end_of_text>"
_MERGE_COUNT = 49152 - 256 - 2  # merges OpenAI's CLIP uses: lines 1.._MERGE_COUNT of the file
_WORD_END = "</w>"
_WORD_PATTERN = regex.compile(
    rf"{START_OF_TEXT}|{END_OF_TEXT}|'s|'t|'re|'ve|'m|'ll|'d|[\p{{L}}]+|[\p{{N}}]|[^\s\p{{L}}\p{{N}}]+",
    regex.IGNORECASE,
)
_BPE_CACHE_WORDS = 65536  # distinct pre-tokens whose merges are memoised per tokenizer


def byte_symbols() -> dict[int, str]:
    """{byte: printable character standing for it} (GPT-2's reversible byte alphabet), in vocabulary order:
    the printable Latin-1 bytes first (standing for themselves), then the other bytes in byte order, which
    take the code points from 256 upwards. The i-th entry is token id i (and id 256 + i with "</w>")."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), 256)]
    symbols = {byte: chr(byte) for byte in printable}
    others = [byte for byte in range(256) if byte not in symbols]
    symbols.update({byte: chr(256 + index) for index, byte in enumerate(others)})
    return symbols


def clean_text(text: str) -> str:
    """open_clip's "lower" cleaning: ftfy.fix_text, HTML unescaped twice, whitespace runs -> one space,
    stripped, lower case."""
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return " ".join(text.split()).lower()


class ClipTokenizer:
    """Text -> CLIP token ids, int32 [B, context_length], each row SOT, BPE ids, EOT, then zeros.

    A text longer than the context keeps its first context_length ids with EOT in the last slot (open_clip's
    truncation). Thread-safe: the merge memo is a locked LRU.
    """

    def __init__(self, merges: Sequence[tuple[str, str]], context_length: int = CONTEXT_LENGTH):
        symbols = byte_symbols()
        vocabulary = [*symbols.values(), *(symbol + _WORD_END for symbol in symbols.values())]
        vocabulary += ["".join(pair) for pair in merges]
        vocabulary += [START_OF_TEXT, END_OF_TEXT]
        self.token_id = {token: index for index, token in enumerate(vocabulary)}
        self.merge_rank = {pair: rank for rank, pair in enumerate(merges)}
        self.byte_symbol = symbols
        self.start_id = self.token_id[START_OF_TEXT]
        self.end_id = self.token_id[END_OF_TEXT]
        self.context_length = context_length
        self._word_ids = lru_cache(maxsize=_BPE_CACHE_WORDS)(self._word_ids_uncached)

    @classmethod
    def from_file(cls, path: Path | str, context_length: int = CONTEXT_LENGTH) -> ClipTokenizer:
        """Read the gzipped merges file (a version line, then one "a b" merge per line)."""
        try:
            with gzip.open(path, "rb") as stream:
                lines = stream.read().decode("utf-8").split("\n")
        except (OSError, EOFError, zlib.error, UnicodeDecodeError) as err:
            raise ClipsamError(f"CLIP vocabulary file '{path}' is not readable ({err})") from err
        merges = [tuple(line.split()) for line in lines[1 : _MERGE_COUNT + 1]]
        if len(merges) != _MERGE_COUNT or any(len(pair) != 2 for pair in merges):
            raise ClipsamError(f"CLIP vocabulary file '{path}' does not hold {_MERGE_COUNT} BPE merges")
        return cls(merges, context_length)

    @property
    def vocab_size(self) -> int:
        return len(self.token_id)

    def encode(self, text: str) -> list[int]:
        """BPE ids of one text, without SOT / EOT and without truncation."""
        ids: list[int] = []
        for piece in _WORD_PATTERN.findall(clean_text(text)):
            ids.extend(self._word_ids(piece))
        return ids

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """int32 [len(texts), context_length] token ids (see the class docstring)."""
        tokens = np.zeros((len(texts), self.context_length), dtype=np.int32)
        for row, text in enumerate(texts):
            ids = [self.start_id, *self.encode(text), self.end_id]
            if len(ids) > self.context_length:
                ids = [*ids[: self.context_length - 1], self.end_id]
            tokens[row, : len(ids)] = ids
        return tokens

    def _word_ids_uncached(self, piece: str) -> tuple[int, ...]:
        if piece in (START_OF_TEXT, END_OF_TEXT):  # the special words are one token each
            return (self.token_id[piece],)
        symbols = [self.byte_symbol[byte] for byte in piece.encode("utf-8")]
        symbols[-1] += _WORD_END
        return tuple(self.token_id[symbol] for symbol in self._merge(symbols))

    def _merge(self, symbols: list[str]) -> list[str]:
        """Apply BPE: repeatedly join every occurrence (left to right) of the adjacent pair with the lowest
        merge rank, until no adjacent pair is a merge."""
        while len(symbols) > 1:
            ranked = [(self.merge_rank.get(pair), pair) for pair in zip(symbols, symbols[1:], strict=False)]
            known = [(rank, pair) for rank, pair in ranked if rank is not None]
            if not known:
                break
            first, second = min(known)[1]
            joined, index = [], 0
            while index < len(symbols):
                if index + 1 < len(symbols) and symbols[index] == first and symbols[index + 1] == second:
                    joined.append(first + second)
                    index += 2
                else:
                    joined.append(symbols[index])
                    index += 1
            symbols = joined
        return symbols
