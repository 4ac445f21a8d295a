"""`clipsam download`, `clipsam models`, `clipsam engines`, `clipsam warmup`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from clipsam.engine.models.zoo import MODELS, get_model

stdout = Console()
stderr = Console(stderr=True, soft_wrap=True)


def download(
    name: Annotated[str, typer.Argument(help="Model name (see `clipsam models`).")],
    directory: Annotated[
        Path | None,
        typer.Option("--dir", help="Destination folder [default: $CLIPSAM_CHECKPOINT_DIR or ./checkpoints]"),
    ] = None,
    force: Annotated[bool, typer.Option(help="Download again even when the file exists.")] = False,
) -> None:
    """Download a checkpoint (the only command that uses the network) and verify its sha256."""
    from clipsam.export.download import download as fetch

    spec = get_model(name)
    with stderr.status(f"downloading {spec.url}"):
        path, digest = fetch(spec, directory, force=force)
    verified = "verified" if spec.sha256 else "no published digest to compare"
    stdout.print(f"{path}  sha256 {digest} ({verified})")


def models() -> None:
    """List the models clipsam knows, with their architecture and checkpoint file."""
    from clipsam.engine.models.zoo import checkpoint_path

    table = Table("name", "family", "architecture", "params (M)", "checkpoint", "present")
    for spec in MODELS.values():
        path = checkpoint_path(spec)
        table.add_row(
            spec.name,
            spec.family,
            spec.arch,
            f"{spec.params_m:g}",
            str(path),
            "yes" if path.is_file() else "no",
        )
    stdout.print(table)


def engines(
    clear: Annotated[
        bool, typer.Option("--clear", help="Remove the cached engine KEY, or every cached engine.")
    ] = False,
    key: Annotated[str | None, typer.Argument(help="An engine's key (with --clear).")] = None,
) -> None:
    """List the engines the cache holds (exported graphs built on first use), or remove them."""
    import time

    from clipsam.engine.errors import ClipsamError
    from clipsam.engine.models import engines as engine_cache

    if key is not None and not clear:
        raise ClipsamError("a KEY is for --clear: `clipsam engines --clear KEY`")
    if clear:
        removed = engine_cache.clear_engines(key)
        stdout.print(f"removed {len(removed)} engine(s)" + (": " + ", ".join(removed) if removed else ""))
        return
    entries = engine_cache.list_engines()
    table = Table(title=str(engine_cache.engines_root()))
    for column in ("key", "models", "weights", "size (MB)", "last use"):
        table.add_column(column, overflow="fold")
    for entry in entries:
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.last_used))
        table.add_row(entry.key, entry.models, entry.weights, f"{entry.bytes / 1e6:.0f}", used)
    stdout.print(table if entries else f"no cached engine in {engine_cache.engines_root()}")


def warmup() -> None:
    """Compile or load every numba kernel now, so no JIT compile lands in a measured or served request."""
    from clipsam import kernels

    seconds = kernels.warmup()
    table = Table("kernel", "seconds")
    for name, value in seconds.items():
        table.add_row(name, f"{value:.3f}")
    stdout.print(table)


def register(app: typer.Typer) -> None:
    app.command()(download)
    app.command()(models)
    app.command()(engines)
    app.command()(warmup)
