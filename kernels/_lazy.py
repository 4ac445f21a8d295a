"""Numba-compiled modules imported on first use, so importing the public kernel modules imports no numba.

A process then pays numba's import and its first cache load where it first calls a kernel, or earlier in
`warm_kernels_in_background()`'s thread, overlapping model loading, instead of at import time.
"""

from __future__ import annotations

import importlib
from types import ModuleType


class LazyModule:
    """Attribute access imports the named module (once; thread-safe through the import system's locks)."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attribute: str):
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        module: ModuleType = importlib.import_module(self._name)
        return getattr(module, attribute)
