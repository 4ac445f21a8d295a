"""Fixtures of the unit tests (the session-wide ones live in the repository's conftest.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def artifacts(tiny_artifacts: Path) -> Path:
    """The session's exported artifacts (tiny CLIP + SAM2.1 tiny random, seed 0)."""
    return tiny_artifacts


@pytest.fixture()
def street_image(tmp_path: Path) -> Path:
    """A small PNG of the demo street scene (96×128)."""
    from PIL import Image

    from clipsam.engine.bench.demo_scene import demo_scene

    path = tmp_path / "street.png"
    Image.fromarray(demo_scene(96, 128)).save(path)
    return path


def rng_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
