"""Shared checks of the reliability tests: one stderr line, no traceback, no file left behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def stderr_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


def assert_single_line(code: int, err: str, expected_code: int, prefix: str, fragment: str = "") -> str:
    """Exit code as expected, exactly one stderr line starting with `prefix`, no traceback."""
    lines = stderr_lines(err)
    assert code == expected_code, f"exit {code} != {expected_code}; stderr: {err!r}"
    assert "Traceback" not in err, err
    assert len(lines) == 1, f"expected one stderr line, got {lines}"
    assert lines[0].startswith(prefix), lines[0]
    assert fragment.lower() in lines[0].lower(), f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


def assert_folder_holds(folder: Path, expected: set[str]) -> None:
    """`folder` holds exactly `expected` (names): no output of a failed run, no temp file, no probe."""
    present = {entry.name for entry in folder.iterdir()}
    assert present == expected, (
        f"unexpected files: {sorted(present - expected)}, missing: {expected - present}"
    )


def small_png(path: Path, height: int = 48, width: int = 64, seed: int = 0) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def file_mode(path: Path) -> int:
    return os.stat(path).st_mode & 0o777


def run_python(code: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -c CODE ARGS` in a fresh interpreter (real stderr, real signals)."""
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, timeout=timeout
    )
