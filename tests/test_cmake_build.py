"""The CMake artifact build: configure, build and ctest the random-weight tiny configuration; a second build
with nothing changed must do no work.

The tiny configuration: SAM2.1 tiny with seeded random weights (the real graphs) and the golden tiny CLIP
checkpoint for SCLIP, which keeps the export and `clipsam verify` to about a minute each on 2 cores.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXPORT_ECHO = "clipsam export ->"  # the custom command's COMMENT, printed only when the export runs


def _run(args: list[str], cwd: Path | None = None, timeout: int = 400) -> subprocess.CompletedProcess:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def generator() -> str:
    return "Ninja" if shutil.which("ninja") else "Unix Makefiles"


def test_cmake_build_then_noop_rebuild(tmp_path, tiny_clip_checkpoint, generator):
    if shutil.which("cmake") is None:
        pytest.fail("cmake is not installed (the CI image must provide cmake >= 3.20)")
    build = tmp_path / "build"
    configure = _run(
        [
            "cmake", "-S", str(REPO), "-B", str(build), "-G", generator,
            "-DCLIPSAM_MODELS=sclip-vit-b16;sam2.1-hiera-tiny", "-DCLIPSAM_RANDOM_WEIGHTS=ON",
            f"-DCLIPSAM_CLIP_CHECKPOINT={tiny_clip_checkpoint}", f"-DPython3_EXECUTABLE={sys.executable}",
        ]
    )  # fmt: skip
    assert "engines will be built" in configure.stdout or "NO engines" in configure.stdout

    first = _run(["cmake", "--build", str(build)])
    assert EXPORT_ECHO in first.stdout
    manifest_path = build / "artifacts" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    assert manifest["models"]["sam2"]["weights"] == "random-init, seed 0"
    assert manifest["models"]["sclip"]["weights"].startswith("sha256:"), (
        "the tiny CLIP checkpoint was not used"
    )

    tests = _run(["ctest", "--test-dir", str(build), "--output-on-failure"])
    assert "100% tests passed" in tests.stdout and "verify" in tests.stdout and "trt-check" in tests.stdout

    built_at = manifest_path.stat().st_mtime_ns
    second = _run(["cmake", "--build", str(build)])
    assert EXPORT_ECHO not in second.stdout, f"the no-op build re-exported:\n{second.stdout}"
    assert manifest_path.stat().st_mtime_ns == built_at
    if generator == "Ninja":
        assert "no work to do" in _run(["ninja", "-C", str(build), "-n"]).stdout
        inputs = _run(["ninja", "-C", str(build), "-t", "query", str(manifest_path)]).stdout
        assert str(REPO / "export" / "build.py") in inputs and str(tiny_clip_checkpoint) in inputs
