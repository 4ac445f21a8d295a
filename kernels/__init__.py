"""numba kernels for labeling, RLE and mask set operations.

Importing this package compiles nothing: submodules (`components`, `rle`, `masks`) are imported on use and
each kernel compiles (or loads numba's on-disk cache) on its first call. `warmup()` does all of that up front.
"""


def warmup() -> dict[str, float]:
    """Compile or load every kernel for every signature the engine uses; returns seconds per kernel."""
    from ._warmup import warmup as _warmup

    return _warmup()
