"""`clipsam export`, `clipsam export-text` and `clipsam verify`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from clipsam.cli.clipsam_command import ClipsamCommand
from clipsam.engine.errors import CheckpointError, ClipsamError

stdout = Console()
stderr = Console(stderr=True, soft_wrap=True)

ModelOpt = Annotated[
    list[str] | None,
    typer.Option("--model", help="Model to export (repeatable): sclip-vit-b16 and/or a SAM2 name."),
]


ONLY_CHOICES = ("sam2", "sclip")
_FAMILY_LABEL = {"sclip": "SCLIP", "sam2": "SAM2"}


def _selected_models(models: list[str] | None, only: str | None) -> tuple[tuple[str, ...], str]:
    """(the model families to export, in EXPORTABLE order; the SAM2 registry name).

    --model names select what is exported (both families when none is given); --only FAMILY narrows it to
    one family and must agree with the --model names.
    """
    from clipsam.engine.models.zoo import DEFAULT_SAM, get_model
    from clipsam.export.build import EXPORTABLE

    if only is not None and only not in ONLY_CHOICES:
        raise ClipsamError(f"unknown --only '{only}'; choose one of: {', '.join(ONLY_CHOICES)}")
    specs = [get_model(name) for name in models or []]
    sam_names = list(dict.fromkeys(spec.name for spec in specs if spec.family == "sam2"))
    if len(sam_names) > 1:
        raise ClipsamError(f"export one SAM2 model per folder, got {', '.join(sam_names)}")
    families = {spec.family for spec in specs} or set(EXPORTABLE)
    if only is not None:
        others = sorted(families - {only}) if models else []
        if others:
            raise ClipsamError(f"--only {only} leaves out {', '.join(others)}, but --model names it")
        families = {only}
    return tuple(f for f in EXPORTABLE if f in families), sam_names[0] if sam_names else DEFAULT_SAM


def _check_applies(families: tuple[str, ...], given: dict[str, tuple[str, bool]]) -> None:
    """A one-line error for an option given for a model this export leaves out."""
    for flag, (family, is_given) in given.items():
        if is_given and family not in families:
            raise ClipsamError(
                f"{flag} is for {_FAMILY_LABEL[family]}, which this export leaves out "
                f"(exporting {', '.join(families)} only): drop {flag} or export {family} too"
            )


def _weights(explicit: Path | None, name: str, family: str, random_weights: bool) -> tuple[Path | None, bool]:
    """(checkpoint, random) of one exported model, by `segment`'s rule (model_options.checkpoint_or_random:
    the explicit file, else the checkpoints folder's, else --random-weights); the one-line error when there is
    none also names --only, which leaves the model out."""
    from clipsam.cli.model_options import checkpoint_or_random, default_checkpoint

    try:
        return checkpoint_or_random(explicit, name, _FAMILY_LABEL[family], random_weights)
    except CheckpointError as err:
        flag = "--checkpoint" if family == "sam2" else "--clip-checkpoint"
        other = "sclip" if family == "sam2" else "sam2"
        raise CheckpointError(
            f"no {_FAMILY_LABEL[family]} checkpoint for {name} (none at '{default_checkpoint(name)}'): pass "
            f"{flag} FILE, run "
            f"`clipsam download {name}`, add --random-weights, or leave {_FAMILY_LABEL[family]} out "
            f"with --only {other}"
        ) from err


def export(
    out: Annotated[Path, typer.Option("--out", help="Artifact folder (created).")],
    model: ModelOpt = None,
    only: Annotated[
        str | None,
        typer.Option(
            "--only",
            help="Export one model: sam2 (SAM2 graphs; run with `segment --points/--boxes`) or sclip "
            "(SCLIP tower + text features).",
        ),
    ] = None,
    clip_checkpoint: Annotated[
        Path | None, typer.Option("--clip-checkpoint", help="CLIP checkpoint (OpenAI or open_clip format).")
    ] = None,
    checkpoint: Annotated[Path | None, typer.Option("--checkpoint", help="SAM2 checkpoint.")] = None,
    random_weights: Annotated[
        bool,
        typer.Option("--random-weights", help="Seeded random weights for each model given no file."),
    ] = False,
    seed: Annotated[
        int, typer.Option("--seed", min=0, max=2**64 - 1, help="Seed of --random-weights (0 … 2**64-1).")
    ] = 0,
    vocabulary: Annotated[
        list[str] | None,
        typer.Option(
            "--vocabulary", "-V", metavar="WORD...", help="Extra words to embed (several after one flag)."
        ),
    ] = None,
    int8: Annotated[
        bool,
        typer.Option(
            "--int8",
            help="Also write the int8 encoder copies `--precision fast` uses: static int8 (calibrated) SCLIP "
            "tower and SAM2 encoder, and a dynamic int8 SAM2 encoder for CPUs without VNNI.",
        ),
    ] = False,
) -> None:
    """Export SCLIP's image tower and / or SAM2's encoder and decoders to ONNX, text features, manifest."""
    from clipsam.engine.image_io import check_output_folder
    from clipsam.engine.models.zoo import DEFAULT_CLIP
    from clipsam.export.build import ExportRequest, export_artifacts

    families, sam_name = _selected_models(model, only)
    _check_applies(
        families,
        {
            "--clip-checkpoint": ("sclip", clip_checkpoint is not None),
            "--vocabulary": ("sclip", bool(vocabulary)),
            "--checkpoint": ("sam2", checkpoint is not None),
        },
    )
    clip_random = sam_random = False
    if "sclip" in families:
        clip_checkpoint, clip_random = _weights(clip_checkpoint, DEFAULT_CLIP, "sclip", random_weights)
    if "sam2" in families:
        checkpoint, sam_random = _weights(checkpoint, sam_name, "sam2", random_weights)
    check_output_folder(out)  # a file, a read-only folder: one line before any model is built
    request = ExportRequest(
        out,
        sam_name,
        clip_checkpoint,
        checkpoint,
        clip_random,
        sam_random,
        seed,
        tuple(_queries(vocabulary or [])),
        int8,
        models=families,
    )
    record = export_artifacts(request, log=lambda line: stderr.print(line))
    _print_export(out, record)


def _print_export(out: Path, record: dict) -> None:
    """Where the manifest went, each model's weights (random ones named), each graph's size and parity."""
    stdout.print(f"wrote {out}/manifest.json")
    for family, entry in record["models"].items():
        weights = f"random weights, seed {entry['seed']}" if entry["random_weights"] else entry["weights"]
        stdout.print(f"  {_FAMILY_LABEL[family]} {entry['name']}: {weights}", soft_wrap=True)
        if entry["random_weights"]:
            stderr.print(f"[yellow]warning:[/] {_FAMILY_LABEL[family]} random weights: not a real model")
    for graph in record["graphs"].values():
        worst = max(_max_abs_values(graph["parity_max_abs"]), default=float("nan"))
        against = "its fp32 graph" if "source_file" in graph else "torch"
        stdout.print(
            f"  {graph['file']}: {graph['bytes'] / 1e6:.1f} MB, worst max abs vs {against} {worst:.2e}"
        )


def export_text(
    directory: Annotated[Path, typer.Argument(help="Artifact folder.")],
    vocabulary: Annotated[
        list[str],
        typer.Option(
            "--vocabulary",
            "-V",
            metavar="WORD...",
            help="Words to embed: several after one flag and / or repeated.",
        ),
    ],
    clip_checkpoint: Annotated[
        Path | None,
        typer.Option("--clip-checkpoint", help="The CLIP checkpoint the artifacts were exported from."),
    ] = None,
) -> None:
    """Embed more words into an artifact folder (needs torch and the CLIP weights it came from)."""
    from clipsam.engine.manifest import read_manifest, write_manifest
    from clipsam.export.build import TEXT_DIR, embed_text
    from clipsam.export.verify import torch_models_for

    manifest = read_manifest(directory)
    if not manifest.has_model("sclip"):
        raise ClipsamError(
            f"'{directory}' holds no SCLIP model (exported with --only sam2): no text to embed"
        )
    sclip, _ = torch_models_for(
        manifest, clip_checkpoint=clip_checkpoint, sam_checkpoint=None, need_sam=False
    )
    queries = _queries(vocabulary)
    embed_text(sclip, Path(directory) / TEXT_DIR, queries)
    write_manifest(manifest.directory, manifest.data)  # records the new text files' sizes and sha256
    stdout.print(f"{len(queries)} queries embedded in {directory}/{TEXT_DIR}")


def verify(
    directory: Annotated[Path, typer.Argument(help="Artifact folder.")],
    clip_checkpoint: Annotated[
        Path | None,
        typer.Option("--clip-checkpoint", help="The CLIP checkpoint the artifacts were exported from."),
    ] = None,
    checkpoint: Annotated[Path | None, typer.Option("--checkpoint", help="SAM2 checkpoint.")] = None,
    image: Annotated[
        Path | None, typer.Option("--image", help="Real image (default: the demo scene).")
    ] = None,
    prompts: Annotated[int, typer.Option(min=1, help="Prompts for the end-to-end mask check.")] = 16,
) -> None:
    """Parity of the exported graphs with their torch modules; exits non-zero past the tolerances."""
    from clipsam.engine.image_io import load_image
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
    stdout.print(_verify_table(report, directory))
    if report.failures:
        raise ClipsamError("verify failed: " + "; ".join(report.failures))
    stdout.print("verify: all outputs within tolerance")


def _verify_table(report, directory: Path):
    """The verify report as a rich Table; the SAM2 mask rows only when the folder has SAM2."""
    from rich.table import Table

    from clipsam.export.verify import TOLERANCE_AGREEMENT, TOLERANCE_MAX_ABS

    table = Table("check", "value", "tolerance", title=f"clipsam verify {directory}")
    for name, value in report.max_abs.items():
        table.add_row(
            name, f"{value:.2e}", f"{TOLERANCE_MAX_ABS:g}" if "disagreement" not in name else "report"
        )
    if report.agreement.size:
        agreement = f"{report.agreement.min():.6f}"
        table.add_row("mask sign agreement (min over prompts)", agreement, f">= {TOLERANCE_AGREEMENT}")
    if report.mask_iou.size:
        iou = f"{report.mask_iou.min():.5f} / {report.mask_iou.mean():.5f}"
        table.add_row("mask IoU per prompt (min / mean)", iou, "report")
    if report.fast_mask_iou.size:
        table.add_row(
            "fast decoder mask IoU vs faithful (min)", f"{report.fast_mask_iou.min():.5f}", ">= 0.999"
        )
    return table


def _max_abs_values(parity: object) -> list[float]:
    """Every number in a nested parity report (all of them are max abs errors)."""
    if isinstance(parity, dict):
        return [v for item in parity.values() for v in _max_abs_values(item)]
    return [float(parity)] if isinstance(parity, int | float) else []


def _queries(words: list[str]) -> list[str]:
    return [q.strip() for word in words for q in word.split(",") if q.strip()]


def register(app: typer.Typer) -> None:
    app.command(cls=ClipsamCommand)(export)
    app.command("export-text", cls=ClipsamCommand)(export_text)
    app.command()(verify)
