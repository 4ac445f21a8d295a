"""numba kernels for labeling, RLE and mask set operations.

Importing this package compiles nothing: submodules (`components`, `rle`, `masks`) are imported on use and
each kernel compiles (or loads numba's on-disk cache) on its first call. `warmup()` does all of that up front.
"""


def warmup() -> dict[str, float]:
    """Compile or load every kernel for every signature the engine uses; returns seconds per kernel."""
    from ._warmup import warmup as _warmup

    return _warmup()


WARMUP_THREAD = "clipsam-kernel-warmup"


def warm_kernels_in_background():
    """Start `warmup()` in a daemon thread (or find the one already running) and return it: numba's first
    load in a process (its import, target context, then each kernel's cache) then overlaps model loading
    instead of landing in the first stage that calls a kernel. A kernel called meanwhile waits on numba's
    compile lock, so results do not depend on it."""
    import threading

    running = [thread for thread in threading.enumerate() if thread.name == WARMUP_THREAD]
    if running:
        return running[0]
    thread = threading.Thread(target=warmup, name=WARMUP_THREAD, daemon=True)
    thread.start()
    return thread
