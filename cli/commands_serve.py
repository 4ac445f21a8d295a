"""`clipsam serve`: the segmentation service on Ray Serve (a local Ray instance by default)."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from clipsam.engine.errors import ClipsamError

stderr = Console(stderr=True, soft_wrap=True)
RANDOM_ARTIFACTS = "serve-random-artifacts-seed{seed}"
HOW_TO_EXPORT = (
    "clipsam serve needs exported artifacts: give --artifacts DIR (made by `clipsam export --out DIR`), "
    "or --random-weights to export seeded random models once into the cache"
)


def serve(
    artifacts: Annotated[
        Path | None, typer.Option("--artifacts", help="Artifact folder from `clipsam export`.")
    ] = None,
    host: Annotated[str, typer.Option("--host", help="HTTP address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="HTTP port.")] = 8000,
    replicas: Annotated[
        int, typer.Option("--replicas", min=1, help="Replicas of each model stage (SCLIP, encoder, decoder).")
    ] = 1,
    address: Annotated[
        str | None,
        typer.Option(
            "--address", help="Join an existing Ray cluster: auto or ray://HOST:PORT (default: local)."
        ),
    ] = None,
    config_out: Annotated[
        Path | None,
        typer.Option("--config", help="Write the Serve config YAML (for `serve deploy`) and exit."),
    ] = None,
    random_weights: Annotated[
        bool,
        typer.Option(
            "--random-weights", help="Without --artifacts: export seeded random models once, cached."
        ),
    ] = False,
    cache_mb: Annotated[
        int, typer.Option("--cache-mb", min=0, help="Image cache per encoder replica, in MiB.")
    ] = 1024,
    max_pixels: Annotated[
        int | None, typer.Option("--max-pixels", min=1, help="Refuse larger images (413).")
    ] = None,
    timeout_s: Annotated[
        float, typer.Option("--timeout", min=1.0, help="Seconds before a request is answered 504.")
    ] = 120.0,
) -> None:
    """Serve segmentation over HTTP: POST /v1/segment, /v1/dense; GET /healthz, /readyz, /metrics, /docs."""
    from clipsam.serve.config import ServeConfig, write_serve_config

    folder = _artifacts(artifacts, random_weights)
    config = ServeConfig(str(folder.resolve()), host=host, port=port, request_timeout_s=timeout_s)
    config = replace(config.with_replicas(replicas), cache_bytes=cache_mb << 20)
    if max_pixels is not None:
        config = replace(config, max_pixels=max_pixels)
    if config_out is not None:
        from clipsam.engine.image_io import check_writable

        check_writable(config_out, (".yaml", ".yml"))
        write_serve_config(config, config_out)
        print(f"wrote {config_out}: run it with `serve deploy {config_out}` on a Ray cluster")
        return
    _run(config, address)


def _artifacts(artifacts: Path | None, random_weights: bool) -> Path:
    """The artifact folder: the one given (checked now, before Ray starts), else the cached random export."""
    from clipsam.engine.manifest import read_manifest

    if artifacts is not None:
        if random_weights:
            raise ClipsamError("--random-weights exports its own artifacts: give it without --artifacts")
        read_manifest(artifacts, check_files=False)
        return artifacts
    if not random_weights:
        raise ClipsamError(HOW_TO_EXPORT)
    from clipsam.engine.text.bank import default_cache_dir

    folder = default_cache_dir() / RANDOM_ARTIFACTS.format(seed=0)
    if not (folder / "manifest.json").is_file():
        from clipsam.export.build import ExportRequest, export_artifacts

        stderr.print(f"exporting seeded random models (once) into {folder}")
        export_artifacts(ExportRequest(folder, clip_random=True, sam_random=True, seed=0), log=lambda _: None)
    stderr.print('[yellow]warning:[/] random weights: every response says so ("random_weights": true)')
    return folder


def _run(config, address: str | None) -> None:
    from clipsam.serve.runner import start_service

    with stderr.status("starting the service (models load and warm up in every replica)"):
        service = start_service(config, address)
    try:
        stderr.print(f"clipsam serving on {service.url} (docs: {service.url}/docs); Ctrl-C stops it")
        while True:
            time.sleep(1.0)
    finally:
        service.stop()


def register(app: typer.Typer) -> None:
    app.command()(serve)


def bench_server(
    url: str,
    concurrency: int,
    requests: int,
    images: Path | None,
    size: tuple[int, int],
    json_path: Path | None,
    baseline: Path | None,
    max_regression: str,
) -> int:
    """`clipsam bench --server URL`: the load run, its table, the record (--json) and the gate (--baseline);
    returns the exit code (1 when the gate finds a regression)."""
    from clipsam.client import Client
    from clipsam.engine.bench import record as records
    from clipsam.engine.bench.measure import bench_images
    from clipsam.engine.image_io import check_writable
    from clipsam.serve import load

    if json_path is not None:
        check_writable(json_path, (".json",))
    tolerance = records.parse_fraction(max_regression)
    stored = records.read_record(baseline) if baseline is not None else None
    bodies, described = _load_images(images, size, requests, bench_images)
    models = Client(url).models()
    with stderr.status(f"{requests} requests, {concurrency} at a time, to {url}"):
        run = load.run_load(url, bodies, ["sky", "car", "road", "tree", "grass"], concurrency, requests, {})
    record = load.server_record(run, url, models, concurrency, described)
    gate = records.compare_to_baseline(record, stored, tolerance) if stored is not None else None
    if gate is not None:
        record["baseline_check"] = {"baseline": str(baseline), **gate.to_json()}
    if json_path is not None:
        records.write_record(json_path, record)
    _print_load(record)
    return 1 if gate is not None and gate.regressed else 0


def _load_images(images: Path | None, size: tuple[int, int], requests: int, bench_images):
    """PNG bytes to send: the folder's images in turn, else one generated scene per request (distinct
    content, so the image cache never answers)."""
    from clipsam.engine.bench.demo_scene import demo_scene
    from clipsam.serve.load import png_bytes

    if images is not None:
        pictures, described = bench_images(images, size)
        return [png_bytes(picture) for picture in pictures], described
    scenes = [png_bytes(demo_scene(*size, seed=seed)) for seed in range(requests)]
    return scenes, f"{requests} generated street scenes {size[0]}x{size[1]} (one per request)"


def _print_load(record: dict) -> None:
    ours = record["ours"]
    print(
        f"clipsam bench --server {record['config']['url']}: {record['config']['requests']} requests, "
        f"concurrency {record['config']['concurrency']}"
        + (" [RANDOM WEIGHTS]" if ours["random_weights"] else "")
    )
    print(f"{'stage':<14}{'p50':>10}{'p90':>10}{'p99':>10}  (ms)")
    for stage, row in ours["stages"].items():
        print(f"{stage:<14}{row['p50']:>10.1f}{row['p90']:>10.1f}{row['p99']:>10.1f}")
    print(
        f"requests/s {ours['requests_per_s']:.3f}, prompts/s {ours['prompts_per_s']:.1f}, "
        f"statuses {ours['statuses']}, 503 retried {ours['retried_503']}, "
        f"errors {sum(ours['errors'].values())}"
    )
    for message, count in ours["errors"].items():
        print(f"  {count} × {message}")
