"""Fixtures shared by tests/ and benchmarks/. Nothing here touches the network; caches go to a per-session
temp folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent
GOLDEN_DIR = REPO / "tests" / "data" / "golden"  # see its README: how the files were produced


@pytest.fixture(scope="session", autouse=True)
def _isolated_caches(tmp_path_factory: pytest.TempPathFactory):
    """Text-feature cache and checkpoint folder private to the test session (no checkpoint is ever found)."""
    previous = {key: os.environ.get(key) for key in ("CLIPSAM_CACHE_DIR", "CLIPSAM_CHECKPOINT_DIR")}
    os.environ["CLIPSAM_CACHE_DIR"] = str(tmp_path_factory.mktemp("clipsam-cache"))
    os.environ["CLIPSAM_CHECKPOINT_DIR"] = str(tmp_path_factory.mktemp("clipsam-checkpoints"))
    yield
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    if not (GOLDEN_DIR / "sclip_golden_outputs.npz").is_file():
        pytest.fail(f"golden SCLIP outputs missing from {GOLDEN_DIR} (part of the repository)")
    return GOLDEN_DIR


@pytest.fixture(scope="session")
def tiny_clip_checkpoint(golden_dir: Path) -> Path:
    """The golden set's tiny OpenAI-format CLIP (embed 64, width 128, 3 layers)."""
    return golden_dir / "sclip_tiny_openai_format.pt"


@pytest.fixture(scope="session")
def sam2_tiny():
    """SAM2.1 tiny with seeded random weights (seed 0), built once per session; tests must not modify it."""
    from clipsam.export.sam2_model import build_sam2_model

    return build_sam2_model("sam2.1-hiera-tiny", random_weights=True, seed=0)


@pytest.fixture(scope="session")
def tiny_artifacts(tmp_path_factory: pytest.TempPathFactory, tiny_clip_checkpoint: Path) -> Path:
    """One export per session: the golden tiny CLIP tower + SAM2.1 tiny (seeded random) graphs."""
    from clipsam.export.build import ExportRequest, export_artifacts

    out = tmp_path_factory.mktemp("artifacts")
    request = ExportRequest(out, clip_checkpoint=tiny_clip_checkpoint, sam_random=True, seed=0)
    export_artifacts(request, log=lambda _: None)
    return out


@pytest.fixture(scope="session")
def tiny_int8_artifacts(tiny_artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`tiny_artifacts` plus the int8 graphs of `clipsam export --int8` (graphs linked, manifest copied)."""
    from clipsam.engine.manifest import MANIFEST_NAME
    from clipsam.export.quantize import add_int8_graphs

    folder = tmp_path_factory.mktemp("int8-artifacts")
    for path in tiny_artifacts.iterdir():
        if path.name == MANIFEST_NAME:
            (folder / path.name).write_bytes(path.read_bytes())
        else:
            (folder / path.name).symlink_to(path)
    add_int8_graphs(folder, log=lambda _: None)
    return folder
