"""A least-recently-used cache bounded by bytes: an image's encoder outputs by the image's content hash."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import numpy as np


def image_key(image: np.ndarray) -> str:
    """Content hash of uint8 [H, W, 3] `image`: its shape and pixels (a PNG and a lossless re-encoding of
    one picture share it)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr(tuple(image.shape)).encode())
    digest.update(np.ascontiguousarray(image).data)
    return digest.hexdigest()


class ByteLru:
    """Thread-safe LRU of values with an `nbytes` attribute, holding at most `max_bytes` bytes in total.

    A value larger than the whole bound is not kept. hits / misses / evictions count since creation.
    """

    def __init__(self, max_bytes: int):
        if max_bytes < 0:
            raise ValueError(f"cache size must be >= 0 bytes, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self._entries: OrderedDict[str, object] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str):
        """The value under `key` (now the most recently used), or None."""
        with self._lock:
            value = self._entries.get(key)
            if value is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: str, value) -> None:
        """Keep `value` under `key`, evicting the least recently used entries until it fits."""
        size = int(value.nbytes)
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.nbytes -= int(old.nbytes)
            if size > self.max_bytes:
                return
            while self.nbytes + size > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self.nbytes -= int(evicted.nbytes)
                self.evictions += 1
            self._entries[key] = value
            self.nbytes += size

    def stats(self) -> dict:
        with self._lock:
            return {
                "entries": len(self._entries),
                "bytes": self.nbytes,
                "max_bytes": self.max_bytes,
                "hits": self.hits,
                "misses": self.misses,
                "evictions": self.evictions,
            }
