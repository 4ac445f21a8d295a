"""Run-based connected-component labeling: the shared core of `components` and `cleanup`.

A "run" is a maximal horizontal segment of equal class in one row. Runs are numbered in raster order of their
first pixel; union-find over runs always keeps the smaller run index as the root, so a component's root is the
run holding its first pixel in raster order. That makes component numbering deterministic without a relabel
pass over the image.
"""

import numpy as np
from numba import njit


@njit(cache=True, nogil=True, inline="always")
def _find(parent: np.ndarray, run: int) -> int:
    """Root of `run` with path halving; parent[i] <= i always holds."""
    while parent[run] != run:
        parent[run] = parent[parent[run]]
        run = parent[run]
    return run


@njit(cache=True, nogil=True, inline="always")
def _union(parent: np.ndarray, a: int, b: int) -> None:
    root_a = _find(parent, a)
    root_b = _find(parent, b)
    if root_a < root_b:
        parent[root_b] = root_a
    elif root_b < root_a:
        parent[root_a] = root_b


# Pixels per block in the boundary search: a block without a class change is skipped with one vectorised test.
_BLOCK = 16


@njit(cache=True, nogil=True, inline="always")
def _emit_run(row, start, end, y, ignore, has_ignore, n_runs, run_row, run_start, run_end, run_class):
    value = row[start]
    if has_ignore and value == ignore:
        return n_runs
    run_row[n_runs] = y
    run_start[n_runs] = start
    run_end[n_runs] = end
    run_class[n_runs] = value
    return n_runs + 1


@njit(cache=True, nogil=True)
def _scan_row(row, y, ignore, has_ignore, n_runs, run_row, run_start, run_end, run_class):
    """Append the runs of one row (ignored runs dropped); returns the new run count."""
    width = row.shape[0]
    start = 0
    x0 = 1
    while x0 + _BLOCK <= width:
        changed = 0
        for k in range(_BLOCK):
            changed |= row[x0 + k] ^ row[x0 + k - 1]
        if changed:
            for x in range(x0, x0 + _BLOCK):
                if row[x] != row[x - 1]:
                    n_runs = _emit_run(
                        row, start, x, y, ignore, has_ignore, n_runs, run_row, run_start, run_end, run_class
                    )
                    start = x
        x0 += _BLOCK
    for x in range(x0, width):
        if row[x] != row[x - 1]:
            n_runs = _emit_run(
                row, start, x, y, ignore, has_ignore, n_runs, run_row, run_start, run_end, run_class
            )
            start = x
    if width > 0:
        n_runs = _emit_run(
            row, start, width, y, ignore, has_ignore, n_runs, run_row, run_start, run_end, run_class
        )
    return n_runs


@njit(cache=True, nogil=True, inline="always")
def _join_rows(parent, run_start, run_end, run_class, check_class, prev_first, row_first, n_runs, reach):
    """Union each run of the current row [row_first, n_runs) with the touching runs of the previous row
    [prev_first, row_first) (of the same class when check_class). reach: 1 for 8-connectivity, else 0.

    Runs on both sides are sorted by start, so one forward sweep suffices.
    """
    prev = prev_first
    for run in range(row_first, n_runs):
        parent[run] = run
    for run in range(row_first, n_runs):
        lo = run_start[run] - reach
        hi = run_end[run] + reach
        while prev < row_first and run_end[prev] <= lo:
            prev += 1
        other = prev
        while other < row_first and run_start[other] < hi:
            if not check_class or run_class[other] == run_class[run]:
                _union(parent, other, run)
            other += 1


@njit(cache=True, nogil=True)
def _number_components(parent, n_runs):
    """(run_component int32 [n_runs], n_components): 0-based, in raster order of first runs."""
    run_component = np.empty(n_runs, np.int32)
    n_components = 0
    for run in range(n_runs):
        if parent[run] == run:
            run_component[run] = n_components
            n_components += 1
        else:
            # parent[run] < run was already numbered, and it lies in the same component.
            run_component[run] = run_component[parent[run]]
    return run_component, n_components


@njit(cache=True, nogil=True)
def label_runs(class_map, ignore, has_ignore, connect8):
    """Find the runs of a class map and join touching runs of the same class.

    class_map: integer [H, W], C-contiguous; pixels equal to `ignore` (when has_ignore) belong to no run.
    connect8: 8-connectivity when True (diagonal neighbours join), 4-connectivity otherwise.
    Returns (run_row int32 [R], run_start int32 [R], run_end int32 [R] (exclusive), run_class int64 [R],
    run_component int32 [R] (0-based component index, numbered in raster order of first pixel), n_components).
    Arrays are views of worst-case-sized buffers, cut to R runs.
    """
    height, width = class_map.shape
    capacity = height * width
    run_row = np.empty(capacity, np.int32)
    run_start = np.empty(capacity, np.int32)
    run_end = np.empty(capacity, np.int32)
    run_class = np.empty(capacity, np.int64)
    parent = np.empty(capacity, np.int32)
    reach = 1 if connect8 else 0
    n_runs = 0
    prev_first = 0
    for y in range(height):
        row_first = n_runs
        n_runs = _scan_row(
            class_map[y], y, ignore, has_ignore, n_runs, run_row, run_start, run_end, run_class
        )
        _join_rows(parent, run_start, run_end, run_class, True, prev_first, row_first, n_runs, reach)
        prev_first = row_first
    run_component, n_components = _number_components(parent, n_runs)
    return (
        run_row[:n_runs],
        run_start[:n_runs],
        run_end[:n_runs],
        run_class[:n_runs],
        run_component,
        n_components,
    )


@njit(cache=True, nogil=True)
def _grown(buffer, used, capacity):
    """A `capacity`-long copy of buffer holding its first `used` entries."""
    bigger = np.empty(capacity, buffer.dtype)
    bigger[:used] = buffer[:used]
    return bigger


@njit(cache=True, nogil=True, inline="always")
def _toggle(x, y, inside, start, n_runs, run_row, run_start, run_end):
    """A 0/1 row changes value at x: close the open run there, or open one. Returns (start, n_runs)."""
    if inside:
        run_row[n_runs] = y
        run_start[n_runs] = start
        run_end[n_runs] = x
        n_runs += 1
    return x, n_runs


@njit(cache=True, nogil=True, inline="always")
def _word_row_runs(mask_row, word_row, value, y, n_runs, run_row, run_start, run_end):
    """Append the runs of pixels equal to `value` in one 0/1 row read as uint64 words of 8 pixels.

    A word XOR itself shifted by one pixel (the previous word's last pixel carried in) has byte j set exactly
    where pixel j differs from its left neighbour, so a word without a change costs one test. Returns the
    new run count.
    """
    inside = mask_row[0] == value
    start = 0
    previous_word = (word_row[0] & np.uint64(0xFF)) << np.uint64(56)  # pixel 0 is no change
    for k in range(word_row.shape[0]):
        word = word_row[k]
        change = word ^ ((word << np.uint64(8)) | (previous_word >> np.uint64(56)))
        previous_word = word
        if change == 0:
            continue
        for j in range(8):
            if (change >> np.uint64(8 * j)) & np.uint64(1):
                start, n_runs = _toggle(8 * k + j, y, inside, start, n_runs, run_row, run_start, run_end)
                inside = not inside
    start, n_runs = _toggle(mask_row.shape[0], y, inside, start, n_runs, run_row, run_start, run_end)
    return n_runs


@njit(cache=True, nogil=True, inline="always")
def _byte_row_runs(mask_row, value, y, n_runs, run_row, run_start, run_end):
    """`_word_row_runs` one pixel at a time, for rows that are not whole aligned words."""
    inside = mask_row[0] == value
    start = 0
    for x in range(1, mask_row.shape[0]):
        if mask_row[x] != mask_row[x - 1]:
            start, n_runs = _toggle(x, y, inside, start, n_runs, run_row, run_start, run_end)
            inside = not inside
    start, n_runs = _toggle(mask_row.shape[0], y, inside, start, n_runs, run_row, run_start, run_end)
    return n_runs


@njit(cache=True, nogil=True)
def label_binary_runs(mask01, words, value, connect8):
    """`label_runs` for the pixels equal to `value` of a 0/1 mask, reading it 8 pixels at a time.

    mask01: uint8 [H, W] holding only 0 and 1, C-contiguous; words: uint64 [H, W / 8], the same memory read
    8 pixels at a time, or [H, 0] when W % 8 != 0 or the rows are not 8-byte aligned (read pixel by pixel).
    Returns (run_row int32 [R], run_start int32 [R], run_end int32 [R] (exclusive), run_component int32 [R],
    n_components), numbered as in `label_runs`.
    """
    height, width = mask01.shape
    row_capacity = (width + 1) // 2
    # grown on demand: most masks have far fewer runs than the worst case of half a row per row
    capacity = max(1024, 4 * row_capacity)
    run_row = np.empty(capacity, np.int32)
    run_start = np.empty(capacity, np.int32)
    run_end = np.empty(capacity, np.int32)
    parent = np.empty(capacity, np.int32)
    reach = 1 if connect8 else 0
    n_runs = 0
    prev_first = 0
    for y in range(height):
        if n_runs + row_capacity > run_row.shape[0]:
            capacity = max(n_runs + row_capacity, 2 * run_row.shape[0])
            run_row = _grown(run_row, n_runs, capacity)
            run_start = _grown(run_start, n_runs, capacity)
            run_end = _grown(run_end, n_runs, capacity)
            parent = _grown(parent, n_runs, capacity)
        row_first = n_runs
        if width == 0:
            pass
        elif 8 * words.shape[1] == width:
            n_runs = _word_row_runs(mask01[y], words[y], value, y, n_runs, run_row, run_start, run_end)
        else:
            n_runs = _byte_row_runs(mask01[y], value, y, n_runs, run_row, run_start, run_end)
        _join_rows(parent, run_start, run_end, run_start, False, prev_first, row_first, n_runs, reach)
        prev_first = row_first
    run_component, n_components = _number_components(parent, n_runs)
    return run_row[:n_runs], run_start[:n_runs], run_end[:n_runs], run_component, n_components
