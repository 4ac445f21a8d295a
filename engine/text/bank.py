"""Cached text features: the 80 OpenAI ImageNet templates per query, encoded once per (weights, queries).

Numpy only at import: the encoder is passed in as a callable, so the cache serves any backend.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from clipsam.engine.outputs import new_file_mode

# The prompt ensemble of OpenAI's CLIP ImageNet zero-shot evaluation, as SCLIP uses it. "{}" is the query.
OPENAI_IMAGENET_TEMPLATES: tuple[str, ...] = (
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
)

EncodeQueries = Callable[[list[str]], np.ndarray]


def default_cache_dir() -> Path:
    """`$CLIPSAM_CACHE_DIR` or ~/.cache/clipsam; text features live in its `text/` subfolder."""
    root = os.environ.get("CLIPSAM_CACHE_DIR")
    return Path(root) if root else Path.home() / ".cache" / "clipsam"


def text_cache_key(weights_id: str, query: str, templates: Sequence[str]) -> str:
    """sha256 over the weights identity, one query and the templates (JSON-encoded)."""
    payload = json.dumps({"weights": weights_id, "query": query, "templates": list(templates)})
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class TextBank:
    """Disk cache of text features: one .npy row per (weights_id, query, templates).

    A query's features do not depend on the other queries, so caching per query is exact and lets
    vocabularies share rows (SCLIP's 26-word background line is encoded once per model, not per vocabulary).
    A missing, unreadable or malformed cache file is recomputed (never fatal); a cache folder that cannot be
    written only costs the recomputation next time (a warning says so).
    """

    def __init__(self, cache_dir: Path | None = None, templates: Sequence[str] = OPENAI_IMAGENET_TEMPLATES):
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.text_dir = self.cache_dir / "text"
        self.templates = tuple(templates)

    def path_for(self, weights_id: str, query: str) -> Path:
        return self.text_dir / f"{text_cache_key(weights_id, query, self.templates)}.npy"

    def lookup(self, weights_id: str, query: str) -> np.ndarray | None:
        """The cached float32 [D] row of one query, or None (read only: nothing is encoded or written)."""
        return _read_row(self.path_for(weights_id, query))

    def get(self, weights_id: str, queries: Sequence[str], encode_fn: EncodeQueries) -> np.ndarray:
        """Text features float32 [Q, D] for `queries` (rows as `encode_fn` gives them), cached or encoded.

        encode_fn(list of queries) -> [len, D]: called at most once, with the queries not in the cache.
        """
        rows = {query: _read_row(self.path_for(weights_id, query)) for query in queries}
        if len({row.shape for row in rows.values() if row is not None}) > 1:
            rows = dict.fromkeys(rows)  # rows of different widths: some file is stale, recompute all
        missing = [query for query, row in rows.items() if row is None]
        if missing:
            encoded = np.asarray(encode_fn(missing), dtype=np.float32)
            assert encoded.ndim == 2 and encoded.shape[0] == len(missing), encoded.shape
            for query, row in zip(missing, encoded, strict=True):
                rows[query] = np.ascontiguousarray(row)
                _write_atomic(self.path_for(weights_id, query), rows[query])
        return np.stack([rows[query] for query in queries])


def _read_row(path: Path) -> np.ndarray | None:
    if not path.is_file():
        return None
    try:
        row = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    valid = row.dtype == np.float32 and row.ndim == 1 and row.size > 0 and bool(np.isfinite(row).all())
    return row if valid else None


def _write_atomic(path: Path, features: np.ndarray) -> None:
    # A temp file in the same folder + os.replace: readers never see a half-written file, even with
    # several processes filling the cache at once.
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp_name = tempfile.mkstemp(prefix=".tmp-", suffix=".npy", dir=path.parent)
        os.fchmod(handle, new_file_mode())  # mkstemp makes 0600; artifacts' text files are shared
        try:
            with os.fdopen(handle, "wb") as tmp_file:
                np.save(tmp_file, features, allow_pickle=False)
            os.replace(tmp_name, path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
    except OSError as err:
        warnings.warn(f"text feature cache not written ({err}); it is recomputed next time", stacklevel=3)
