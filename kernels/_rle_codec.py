"""COCO RLE codec kernels: masks <-> uncompressed counts <-> pycocotools' compressed string.

COCO RLE walks the mask in column-major (Fortran) order and alternates run lengths of 0s and 1s, starting
with a (possibly empty) run of 0s. A batch of counts travels as one flat uint32 array plus int64 offsets
[n + 1] (mask i owns counts[offsets[i]:offsets[i + 1]]); strings travel the same way as uint8 characters.
Any nonzero mask value counts as foreground.
"""

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _grow(buffer, needed):
    """Return `buffer` or a copy at least `needed` long (doubling, so appends stay amortised O(1))."""
    if needed <= buffer.shape[0]:
        return buffer
    bigger = np.empty(max(needed, 2 * buffer.shape[0]), buffer.dtype)
    bigger[: buffer.shape[0]] = buffer
    return bigger


@njit(cache=True, nogil=True)
def _row_transitions(mask, words, trans_x, trans_y, column_count):
    """Pixels whose value differs from the previous pixel in column-major order, found row by row.

    mask: uint8 [h, w] C-contiguous; words: the same memory as [h, w / p] words of p pixels (uint64 when
    w % 8 == 0, else the uint8 mask itself), so that unchanged stretches cost one XOR per word.
    Records (x, y) in raster order into trans_x / trans_y (h * w long: growing them inside this loop costs
    more than the scan) and counts them per column; column boundaries compare (0, x) with (h - 1, x - 1), and
    (0, 0) with an implicit 0. Returns the number of transitions.
    """
    height, width = mask.shape
    pixels_per_word = width // words.shape[1]
    n = 0
    previous = False
    for x in range(width):
        current = mask[0, x] != 0
        if current != previous:
            trans_x[n] = x
            trans_y[n] = 0
            column_count[x] += 1
            n += 1
        previous = mask[height - 1, x] != 0
    for y in range(1, height):
        row = words[y]
        above = words[y - 1]
        for k in range(words.shape[1]):
            if row[k] != above[k]:
                for x in range(k * pixels_per_word, (k + 1) * pixels_per_word):
                    if (mask[y, x] != 0) != (mask[y - 1, x] != 0):
                        trans_x[n] = x
                        trans_y[n] = y
                        column_count[x] += 1
                        n += 1
    return n


@njit(cache=True, nogil=True)
def encode_rows(masks, words):
    """Counts of each mask of a C-ordered batch; returns (counts uint32, offsets int64 [n + 1]).

    masks: uint8 [n, h, w] C-contiguous; words: the same memory as [n, h, w / p] (see `_row_transitions`).
    """
    n_masks, height, width = masks.shape
    counts = np.empty(max(16, n_masks * 64), np.uint32)
    offsets = np.zeros(n_masks + 1, np.int64)
    trans_x = np.empty(height * width, np.int32)
    trans_y = np.empty(height * width, np.int32)
    positions = np.empty(height * width, np.int64)
    column_count = np.zeros(width + 1, np.int64)
    total = height * width
    for k in range(n_masks):
        column_count[:] = 0
        n = _row_transitions(masks[k], words[k], trans_x, trans_y, column_count)
        # Counting sort by column turns raster order into column-major order (stable: y stays sorted).
        start = 0
        for x in range(width):
            c = column_count[x]
            column_count[x] = start
            start += c
        for t in range(n):
            x = trans_x[t]
            positions[column_count[x]] = np.int64(x) * height + trans_y[t]
            column_count[x] += 1
        base = offsets[k]
        counts = _grow(counts, base + n + 1)
        last = 0
        for t in range(n):
            counts[base + t] = positions[t] - last
            last = positions[t]
        counts[base + n] = total - last
        offsets[k + 1] = base + n + 1
    return counts[: offsets[n_masks]], offsets


@njit(cache=True, nogil=True)
def encode_flat(masks, words):
    """Counts of masks already in column-major pixel order; returns (counts uint32, offsets int64 [n + 1]).

    masks: uint8 [n, h * w]; words: the same memory as [n, h * w / p] (uint64 when h * w % 8 == 0, else the
    uint8 masks). A word equal to itself shifted by one pixel (carrying in the previous word's last pixel)
    holds no value change and is skipped whole.
    """
    n_masks, total = masks.shape
    counts = np.empty(max(16, n_masks * 64), np.uint32)
    offsets = np.zeros(n_masks + 1, np.int64)
    scratch = np.empty(total + 1, np.uint32)
    n_words = words.shape[1]
    pixels_per_word = total // n_words if n_words else 1
    for k in range(n_masks):
        flat = masks[k]
        m = 0
        last = 0
        previous = False
        previous_word = words[k, 0] ^ words[k, 0]
        for j in range(n_words):
            word = words[k, j]
            if pixels_per_word == 1:
                unchanged = word == previous_word
            else:
                unchanged = word == ((word << 8) | (previous_word >> 56))
            previous_word = word
            if unchanged and j > 0:
                continue
            for i in range(j * pixels_per_word, (j + 1) * pixels_per_word):
                current = flat[i] != 0
                if current != previous:
                    scratch[m] = i - last
                    m += 1
                    last = i
                    previous = current
        scratch[m] = total - last
        m += 1
        base = offsets[k]
        counts = _grow(counts, base + m)
        counts[base : base + m] = scratch[:m]
        offsets[k + 1] = base + m
    return counts[: offsets[n_masks]], offsets


@njit(cache=True, nogil=True)
def counts_to_strings(counts, offsets):
    """pycocotools' compressed form: 5 bits per char (+48), bit 0x20 = more, deltas from the 4th count on."""
    n_masks = offsets.shape[0] - 1
    # A uint32 count (or a delta of two) needs at most 7 chars.
    chars = np.empty(max(1, 7 * counts.shape[0]), np.uint8)
    char_offsets = np.zeros(n_masks + 1, np.int64)
    p = 0
    for k in range(n_masks):
        base = offsets[k]
        for i in range(offsets[k + 1] - base):
            value = np.int64(counts[base + i])
            if i > 2:
                value -= np.int64(counts[base + i - 2])
            more = True
            while more:
                c = value & 0x1F
                value >>= 5
                more = value != -1 if (c & 0x10) else value != 0
                if more:
                    c |= 0x20
                chars[p] = c + 48
                p += 1
        char_offsets[k + 1] = p
    return chars[:p], char_offsets


@njit(cache=True, nogil=True, inline="always")
def read_count(chars, p, end):
    """One signed 5-bits-per-char value of pycocotools' string code starting at chars[p]: (value, next p)."""
    value = np.int64(0)
    shift = 0
    more = True
    while more and p < end:
        c = np.int64(chars[p]) - 48
        value |= (c & 0x1F) << shift
        more = (c & 0x20) != 0
        p += 1
        shift += 5
        if not more and (c & 0x10):
            value |= np.int64(-1) << shift
    return value, p


@njit(cache=True, nogil=True)
def strings_to_counts(chars, char_offsets):
    """Inverse of `counts_to_strings`. Returns (counts uint32, offsets int64 [n + 1])."""
    n_masks = char_offsets.shape[0] - 1
    counts = np.empty(max(1, chars.shape[0]), np.uint32)
    offsets = np.zeros(n_masks + 1, np.int64)
    m = 0
    for k in range(n_masks):
        p = char_offsets[k]
        end = char_offsets[k + 1]
        first = m
        while p < end:
            value, p = read_count(chars, p, end)
            if m - first > 2:
                value += np.int64(counts[m - 2])
            counts[m] = np.uint32(value & 0xFFFFFFFF)
            m += 1
        offsets[k + 1] = m
    return counts[:m], offsets


@njit(cache=True, nogil=True)
def decode_flat(counts, offsets, total):
    """Masks in column-major pixel order, uint8 [n, total]; returns (masks, first invalid RLE index or -1).

    An RLE is invalid when its counts do not sum to `total` (= h * w).
    """
    n_masks = offsets.shape[0] - 1
    masks = np.zeros((n_masks, total), np.uint8)
    for k in range(n_masks):
        position = np.int64(0)
        value = 0
        for i in range(offsets[k], offsets[k + 1]):
            end = position + np.int64(counts[i])
            if end > total:
                return masks, k
            if value:
                masks[k, position:end] = 1
            position = end
            value = 1 - value
        if position != total:
            return masks, k
    return masks, -1
