"""`clipsam export`, `clipsam export-text` and `clipsam verify`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from clipsam.engine.errors import ClipsamError

stdout = Console()
stderr = Console(stderr=True, soft_wrap=True)

ModelOpt = Annotated[
    list[str] | None,
    typer.Option("--model", help="Model to export (repeatable): sclip-vit-b16 and/or a SAM2 name."),
]


def _split_models(models: list[str] | None) -> str:
    """The SAM2 model among --model names (SCLIP is always sclip-vit-b16)."""
    from clipsam.export.registry import DEFAULT_SAM, get_model

    sam_names = []
    for name in models or []:
        spec = get_model(name)
        if spec.family == "sam2":
            sam_names.append(spec.name)
    if len(sam_names) > 1:
        raise ClipsamError(f"export one SAM2 model per folder, got {', '.join(sam_names)}")
    return sam_names[0] if sam_names else DEFAULT_SAM


def export(
    out: Annotated[Path, typer.Option("--out", help="Artifact folder (created).")],
    model: ModelOpt = None,
    clip_checkpoint: Annotated[Path | None, typer.Option("--clip-checkpoint")] = None,
    checkpoint: Annotated[Path | None, typer.Option("--checkpoint", help="SAM2 checkpoint.")] = None,
    random_weights: Annotated[bool, typer.Option("--random-weights")] = False,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    vocabulary: Annotated[
        list[str] | None, typer.Option("--vocabulary", "-V", help="Extra words to embed.")
    ] = None,
    int8: Annotated[
        bool, typer.Option("--int8", help="Also write an int8 SAM2 encoder copy (for `--precision fast`).")
    ] = False,
) -> None:
    """Export SCLIP's image tower and SAM2's encoder and decoder to ONNX, with text features and manifest."""
    from clipsam.cli.model_options import require_checkpoint
    from clipsam.export.build import ExportRequest, export_artifacts

    sam_name = _split_models(model)
    if not random_weights:
        clip_checkpoint = require_checkpoint(clip_checkpoint, "sclip-vit-b16", "CLIP")
        checkpoint = require_checkpoint(checkpoint, sam_name, "SAM2")
    # --random-weights fills in whichever model has no checkpoint given.
    clip_random = random_weights and clip_checkpoint is None
    sam_random = random_weights and checkpoint is None
    queries = tuple(_queries(vocabulary or []))
    request = ExportRequest(
        out, sam_name, clip_checkpoint, checkpoint, clip_random, sam_random, seed, queries, int8
    )
    record = export_artifacts(request, log=lambda line: stderr.print(line))
    stdout.print(
        f"wrote {out}/manifest.json ({'random weights' if record['random_weights'] else 'checkpoints'})"
    )
    for graph in record["graphs"].values():
        worst = max(_max_abs_values(graph["parity_max_abs"]), default=float("nan"))
        stdout.print(f"  {graph['file']}: {graph['bytes'] / 1e6:.1f} MB, worst max abs vs torch {worst:.2e}")


def export_text(
    directory: Annotated[Path, typer.Argument(help="Artifact folder.")],
    vocabulary: Annotated[list[str], typer.Option("--vocabulary", "-V", help="Words to embed (repeatable).")],
    clip_checkpoint: Annotated[Path | None, typer.Option("--clip-checkpoint")] = None,
) -> None:
    """Embed more words into an artifact folder (needs torch and the CLIP weights it came from)."""
    from clipsam.engine.manifest import read_manifest
    from clipsam.export.build import TEXT_DIR, embed_text
    from clipsam.export.verify import torch_models_for

    manifest = read_manifest(directory)
    sclip, _ = torch_models_for(
        manifest, clip_checkpoint=clip_checkpoint, sam_checkpoint=None, need_sam=False
    )
    queries = _queries(vocabulary)
    embed_text(sclip, Path(directory) / TEXT_DIR, queries)
    stdout.print(f"{len(queries)} queries embedded in {directory}/{TEXT_DIR}")


def verify(
    directory: Annotated[Path, typer.Argument(help="Artifact folder.")],
    clip_checkpoint: Annotated[Path | None, typer.Option("--clip-checkpoint")] = None,
    checkpoint: Annotated[Path | None, typer.Option("--checkpoint", help="SAM2 checkpoint.")] = None,
    image: Annotated[
        Path | None, typer.Option("--image", help="Real image (default: the demo scene).")
    ] = None,
    prompts: Annotated[int, typer.Option(min=1, help="Prompts for the end-to-end mask check.")] = 16,
) -> None:
    """Parity of the exported graphs with their torch modules; exits non-zero past the tolerances."""
    from rich.table import Table

    from clipsam.engine.image_io import load_image
    from clipsam.export.verify import TOLERANCE_AGREEMENT, TOLERANCE_MAX_ABS
    from clipsam.export.verify_checks import verify_artifacts

    picture = load_image(image) if image is not None else None
    with stderr.status("verifying artifacts against torch"):
        report = verify_artifacts(
            directory,
            clip_checkpoint=clip_checkpoint,
            sam_checkpoint=checkpoint,
            image=picture,
            prompt_count=prompts,
        )
    table = Table("check", "value", "tolerance", title=f"clipsam verify {directory}")
    for name, value in report.max_abs.items():
        table.add_row(
            name, f"{value:.2e}", f"{TOLERANCE_MAX_ABS:g}" if "disagreement" not in name else "report"
        )
    table.add_row(
        "mask sign agreement (min over prompts)", f"{report.agreement.min():.6f}", f">= {TOLERANCE_AGREEMENT}"
    )
    table.add_row(
        "mask IoU per prompt (min / mean)",
        f"{report.mask_iou.min():.5f} / {report.mask_iou.mean():.5f}",
        "report",
    )
    if report.fast_mask_iou.size:
        table.add_row(
            "fast decoder mask IoU vs faithful (min)", f"{report.fast_mask_iou.min():.5f}", ">= 0.999"
        )
    stdout.print(table)
    if report.failures:
        raise ClipsamError("verify failed: " + "; ".join(report.failures))
    stdout.print("verify: all outputs within tolerance")


def _max_abs_values(parity: object) -> list[float]:
    """Every number in a nested parity report (all of them are max abs errors)."""
    if isinstance(parity, dict):
        return [v for item in parity.values() for v in _max_abs_values(item)]
    return [float(parity)] if isinstance(parity, int | float) else []


def _queries(words: list[str]) -> list[str]:
    return [q.strip() for word in words for q in word.split(",") if q.strip()]


def register(app: typer.Typer) -> None:
    app.command()(export)
    app.command("export-text")(export_text)
    app.command()(verify)
