"""Fixtures shared by the benchmark groups: the full-size artifacts (exported once per session) and the
torch reference pipeline on the same weights."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from harness import benchmarks_enabled


@pytest.fixture(scope="session")
def bench_artifacts(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """CLIPSAM_BENCH_ARTIFACTS=DIR (made by `clipsam export --out DIR --random-weights --int8`), else: in an
    enabled run ViT-B/16 + SAM2.1 tiny exported once per session (minutes), in the correctness run the
    session's tiny-CLIP export."""
    reuse = os.environ.get("CLIPSAM_BENCH_ARTIFACTS")
    if reuse:
        return Path(reuse)
    if not benchmarks_enabled(request.config):
        return request.getfixturevalue("tiny_artifacts")
    from clipsam.export.build import ExportRequest, export_artifacts

    out = tmp_path_factory.mktemp("bench-artifacts")
    export_artifacts(
        ExportRequest(out, clip_random=True, sam_random=True, seed=0, int8=True), log=lambda _: None
    )
    return out


@pytest.fixture(scope="session")
def bench_reference(bench_artifacts: Path, request: pytest.FixtureRequest):
    """The pure PyTorch reference pipeline with the artifacts' weights (seeded random, or the golden tiny CLIP
    of the correctness run)."""
    from clipsam.engine.bench.measure import reference_choice
    from clipsam.engine.factory import load_reference_pipeline
    from clipsam.engine.manifest import read_manifest

    models = read_manifest(bench_artifacts, check_files=False).data["models"]
    random_clip = models["sclip"].get("seed") is not None
    clip_file = None if random_clip else request.getfixturevalue("tiny_clip_checkpoint")
    return load_reference_pipeline(reference_choice(models, clip_file, None))
