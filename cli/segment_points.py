"""`clipsam segment --points x,y --boxes x0,y0,x1,y1`: SAM2 alone on prompts the user gives.

Runs on exported artifacts, a folder from `clipsam export --only sam2` or a full one (its SCLIP is then not
used). Each point and each box is one prompt and gives one segment: class id i, class name "prompt i", points
first in the order given, then boxes (engine/prompts.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console

from clipsam.engine.errors import ClipsamError
from clipsam.engine.image_io import DEFAULT_MAX_PIXELS

stdout = Console()
stderr = Console(stderr=True, soft_wrap=True)

PointsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--points",
        help="A point prompt x,y in image pixels (repeat for more; each is one prompt). SAM2 only "
        "(the engine's SAM2 graphs, or --artifacts): takes no vocabulary.",
        rich_help_panel="Prompts",
    ),
]
BoxesOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--boxes",
        help="A box prompt x0,y0,x1,y1 in image pixels (repeat for more; one prompt each).",
        rich_help_panel="Prompts",
    ),
]
EDITS = ("segment", "replace", "remove")


def parse_numbers(values: list[str] | None, count: int, flag: str, form: str) -> np.ndarray:
    """float32 [N, count] from N "a,b,…" strings; a one-line ClipsamError for a malformed one."""
    rows = []
    for value in values or []:
        parts = [part.strip() for part in value.split(",")]
        try:
            numbers = [float(part) for part in parts]
        except ValueError:
            numbers = []
        if len(numbers) != count or not np.all(np.isfinite(numbers)):
            raise ClipsamError(f"{flag} '{value}' is not {form} (numbers in image pixels, comma-separated)")
        rows.append(numbers)
    return np.array(rows, np.float32).reshape(-1, count)


def check_no_conflicts(given: dict[str, object]) -> None:
    """A one-line error for an option that means nothing with user prompts (flag → value; truthy = given)."""
    for flag, is_given in given.items():
        if is_given:
            raise ClipsamError(
                f"{flag} does not apply to --points / --boxes: those prompts go to SAM2 as given, without "
                "SCLIP or a vocabulary; use one or the other"
            )


def segment_given_prompts(
    *,
    image: Path,
    points: list[str] | None,
    boxes: list[str] | None,
    artifacts: Path | None,
    backend: str,
    providers: str,
    precision: str,
    output: Path,
    json_path: Path | None,
    edit: str,
    verbose: bool,
    models=None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> None:
    """Segment IMAGE at the given prompts and write the picture (overlay, or with --edit remove / replace
    every prompt's mask) and the COCO-RLE JSON. Without artifacts, SAM2 alone from the engine cache for
    `models` (a ModelChoice)."""
    from clipsam.cli.segment_pipelines import artifact_pipeline
    from clipsam.engine import image_io

    if artifacts is None and models is None:
        raise ClipsamError("--points / --boxes run on exported SAM2 graphs, not on --backend torch")
    assert edit in EDITS, edit
    points_xy = parse_numbers(points, 2, "--points", "x,y")
    boxes_xyxy = parse_numbers(boxes, 4, "--boxes", "x0,y0,x1,y1")
    picture_in = image_io.load_image(image, max_pixels)
    image_io.check_writable(output, image_io.IMAGE_SUFFIXES)
    if json_path is not None:
        image_io.check_writable(json_path, (".json",))
    with stderr.status("loading SAM2 graphs") as status:
        pipeline = artifact_pipeline(
            artifacts, backend, providers, precision, models=models, stages=("masks",)
        )
        result = pipeline.segment_with_prompts(
            picture_in, points_xy, boxes_xyxy, progress=lambda stage: status.update(f"stage: {stage}")
        )
    _write(picture_in, result, edit, output, json_path, image)
    _report(result, output, json_path, verbose)


def _write(picture_in, result, edit: str, output: Path, json_path: Path | None, source: Path) -> None:
    from clipsam.engine import outputs, render

    if edit == "segment":
        picture = render.overlay(picture_in, result)
    else:
        mask = render.target_mask(result, None)  # every prompt's mask
        picture = render.mask_picture(mask) if edit == "replace" else render.blacken(picture_in, mask)
    record = outputs.result_to_json(result, str(source)) if json_path is not None else None
    outputs.write_results(output, picture, json_path, record)  # both files or neither


def _report(result, output: Path, json_path: Path | None, verbose: bool) -> None:
    from clipsam.engine.render import random_model_labels

    random = random_model_labels(result.models)
    label = f" [RANDOM WEIGHTS: {', '.join(random)}]" if random else ""
    stdout.print(f"{len(result.segments)} segments{label}, one per prompt")
    for segment in result.segments:
        stdout.print(f"  {segment.class_name}: area {segment.area}, predicted IoU {segment.score:.3f}")
    stdout.print(f"wrote {output}" + (f" and {json_path}" if json_path else ""))
    if verbose:
        stdout.print(", ".join(f"{stage} {ms:.0f} ms" for stage, ms in result.timings_ms.items()))
