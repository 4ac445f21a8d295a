"""`clipsam trt-check` (static TensorRT readiness of an artifact folder) and `clipsam build-engine`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from clipsam.engine.errors import ClipsamError

stdout = Console(highlight=False, soft_wrap=True)
stderr = Console(stderr=True, soft_wrap=True)


def trt_check(directory: Annotated[Path, typer.Argument(help="Artifact folder.")]) -> None:
    """Check every graph for what TensorRT's parser needs; exits non-zero when one is not ready."""
    from clipsam.export.trt_readiness import check_artifacts

    report = check_artifacts(directory)
    stdout.print(report.text(), markup=False)
    if not report.ready:
        names = ", ".join(graph.name for graph in report.graphs if not graph.ready)
        raise ClipsamError(f"not TensorRT-ready: {names} (problems listed above)")


def build_engine(
    directory: Annotated[
        Path, typer.Argument(help="Artifact folder (engines are written beside the graphs).")
    ],
    workspace_gib: Annotated[
        float, typer.Option("--workspace-gib", min=0.25, help="Builder workspace.")
    ] = 4.0,
    timing_cache: Annotated[
        Path | None, typer.Option("--timing-cache", help="Timing cache file (default DIR/trt_timing.cache).")
    ] = None,
) -> None:
    """Build fp16 engines (LayerNorm/softmax fp32) with prompt/crop profiles; the manifest records them."""
    from clipsam.export.trt_build import build_engines

    section = build_engines(
        directory, workspace_gib=workspace_gib, timing_cache=timing_cache, log=lambda line: stderr.print(line)
    )
    gpu = section["gpu"]
    stdout.print(
        f"TensorRT {section['tensorrt_version']} engines for {gpu['name']} (sm {gpu['compute_capability']}) "
        f"recorded in {directory}/manifest.json"
    )


def register(app: typer.Typer) -> None:
    app.command("trt-check")(trt_check)
    app.command("build-engine")(build_engine)
