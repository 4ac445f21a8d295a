"""The accuracy mode's options (issue 26) of `segment` and `dense`: `--regions`, `--region-points`,
`--region-iou`."""

from __future__ import annotations

from typing import Annotated

import typer

from clipsam.engine.errors import ClipsamError
from clipsam.engine.regions import MAX_POINTS_PER_SIDE, RegionOptions

ACCURACY = "Accuracy mode"
DEFAULT_POINTS = RegionOptions().points_per_side
DEFAULT_IOU = RegionOptions().min_iou

RegionsOpt = Annotated[
    bool,
    typer.Option(
        "--regions",
        help="Accuracy mode: SAM2's masks of a point grid restrict SCLIP's last-block attention to each "
        "region and vote on its labels (slower; off by default).",
        rich_help_panel=ACCURACY,
    ),
]
RegionPointsOpt = Annotated[
    int,
    typer.Option(
        "--region-points",
        help=f"With --regions: grid points per side (1..{MAX_POINTS_PER_SIDE}).",
        rich_help_panel=ACCURACY,
    ),
]
RegionIouOpt = Annotated[
    float,
    typer.Option(
        "--region-iou",
        help="With --regions: minimum predicted IoU of a region mask.",
        rich_help_panel=ACCURACY,
    ),
]


def region_options(
    regions: bool, points: int, iou: float, min_region_size: int = 100
) -> RegionOptions | None:
    """RegionOptions for `--regions`, None without it; `--region-points` / `--region-iou` alone: an error."""
    if not regions:
        if points != DEFAULT_POINTS or iou != DEFAULT_IOU:
            flag = "--region-points" if points != DEFAULT_POINTS else "--region-iou"
            raise ClipsamError(f"{flag} sets the accuracy mode: add --regions")
        return None
    return RegionOptions(points_per_side=points, min_iou=iou, min_region_size=min_region_size)
