"""`clipsam serve`: the segmentation service on Ray Serve (a local Ray instance by default)."""

from __future__ import annotations

import signal
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from clipsam.engine.errors import ClipsamError

stderr = Console(stderr=True, soft_wrap=True)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def serve(
    artifacts: Annotated[
        Path | None,
        typer.Option(
            "--artifacts",
            help="Artifact folder from `clipsam export` [default: the engine cache's for the checkpoints "
            "found, built on first use].",
        ),
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
            "--random-weights",
            help="Without --artifacts: seeded random weights for the models without a checkpoint (the "
            "engine cache builds them once).",
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
    drain_timeout_s: Annotated[
        float,
        typer.Option(
            "--drain-timeout",
            min=0.0,
            help="On SIGTERM / Ctrl-C: seconds the requests in flight get to finish before it stops.",
        ),
    ] = 30.0,
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
    _run(config, address, drain_timeout_s)


def _artifacts(artifacts: Path | None, random_weights: bool) -> Path:
    """The artifact folder: the one given (checked now, before Ray starts), else the engine cache's for the
    checkpoints found (random weights where none is found, with --random-weights), built on first use."""
    from clipsam.cli import model_options as mo
    from clipsam.engine.manifest import read_manifest
    from clipsam.engine.models.engines import cached_engine

    if artifacts is not None:
        if random_weights:
            raise ClipsamError("--random-weights is for the engine cache: give it without --artifacts")
        read_manifest(artifacts, check_files=False)
        return artifacts
    clip_path, clip_random = mo.checkpoint_or_random(None, mo.CLIP_NAME, "CLIP", random_weights)
    sam_path, sam_random = mo.checkpoint_or_random(None, mo.DEFAULT_SAM, "SAM2", random_weights)
    choice = mo.ModelChoice(clip_path, clip_random, mo.DEFAULT_SAM, sam_path, sam_random)
    engine = cached_engine(
        choice, int8=False, stages=("dense", "masks"), log=lambda line: stderr.print(f"clipsam: {line}")
    )
    if clip_random or sam_random:
        stderr.print('[yellow]warning:[/] random weights: every response says so ("random_weights": true)')
    return engine.path


def _run(config, address: str | None, drain_timeout_s: float) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully: readiness false and new requests 503, the
    requests in flight finish (at most drain_timeout_s), Serve and the local Ray stop, one line, exit 0."""
    from clipsam.serve.runner import start_service

    with stderr.status("starting the service (models load and warm up in every replica)"):
        service = start_service(config, address)
    stop = threading.Event()
    # After ray.init: Ray's own SIGTERM handlers (a native stack dump, then abort) are replaced by ours.
    previous = {signum: signal.signal(signum, lambda *_: stop.set()) for signum in STOP_SIGNALS}
    drained = 0
    try:
        stderr.print(
            f"clipsam serving on {service.url} (docs: {service.url}/docs); Ctrl-C or SIGTERM stops it"
        )
        while not stop.wait(1.0):
            pass
        stderr.print(f"stopping: draining the requests in flight (at most {drain_timeout_s:g} s)")
        drained = service.drain(drain_timeout_s)
    finally:
        service.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    print(f"clipsam: stopped ({drained} requests drained)", file=sys.stderr)


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
