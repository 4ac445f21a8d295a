"""`clipsam bench`: per-stage latency, throughput, speedup over the PyTorch reference; the regression gate."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from clipsam.cli import model_options as mo
from clipsam.cli.commands_segment import (
    ArtifactsOpt,
    ClipCkptOpt,
    ProvidersOpt,
    RandomOpt,
    SeedOpt,
)
from clipsam.engine.backends import pipeline_names
from clipsam.engine.errors import ClipsamError

# The table is ~100 columns wide; rich assumes 80 when stdout is not a terminal (CI logs, files).
stdout = Console(width=None if sys.stdout.isatty() else 132)
stderr = Console(stderr=True, soft_wrap=True)
REGRESSION_EXIT = 1


def bench(
    stage: Annotated[
        str,
        typer.Option(
            "--stage",
            help="dense, encoder, decoder, kernels, end-to-end, or regions (end to end, accuracy mode).",
        ),
    ] = "end-to-end",
    backend: Annotated[
        str,
        typer.Option(
            "--backend",
            help=f"{', '.join(pipeline_names())}; a variant: -faithful keeps sam2's decoder structure, -fast "
            "is --precision fast, -int8-static / -int8 / -bf16 force one fast mechanism "
            "[default: onnxruntime, on --artifacts DIR or the engine cache]",
        ),
    ] = "auto",
    artifacts: ArtifactsOpt = None,
    providers: ProvidersOpt = "auto",
    sam_model: Annotated[
        str | None,
        typer.Option("--sam-model", help="SAM2 model [default: the artifacts' or sam2.1-hiera-tiny]."),
    ] = None,
    checkpoint: Annotated[Path | None, typer.Option("--checkpoint", help="SAM2 checkpoint file.")] = None,
    clip_checkpoint: ClipCkptOpt = None,
    random_weights: RandomOpt = False,
    seed: SeedOpt = 0,
    images: Annotated[
        Path | None, typer.Option("--images", help="Folder of PNG/JPEG images (used in turn).")
    ] = None,
    size: Annotated[
        str, typer.Option("--size", help="HEIGHTxWIDTH of the generated street scene (without --images).")
    ] = "480x640",
    prompts: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Fixed decoder batch of N grid prompts [default: the dense map's regions, min "
            "confidence 0, at most 128].",
        ),
    ] = None,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed runs first.")] = 1,
    runs: Annotated[int, typer.Option(min=1, help="Timed runs.")] = 5,
    compare_to: Annotated[
        str | None,
        typer.Option("--compare-to", help="Also run this backend (torch: the reference), interleaved."),
    ] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the full record here.")] = None,
    baseline: Annotated[
        Path | None, typer.Option("--baseline", help="A stored --json record to gate this run against.")
    ] = None,
    max_regression: Annotated[
        str, typer.Option("--max-regression", help="Allowed loss of speedup vs the baseline, e.g. 10%.")
    ] = "10%",
    plot: Annotated[Path | None, typer.Option("--plot", help="Per-stage breakdown chart (.png).")] = None,
    server: Annotated[
        str | None, typer.Option("--server", help="Load-test a running `clipsam serve` at this URL.")
    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="With --server: requests at a time.")] = 4,
    requests: Annotated[int, typer.Option(min=1, help="With --server: requests in all.")] = 100,
    region_points: Annotated[
        int, typer.Option("--region-points", min=1, help="With --stage regions: grid points per side.")
    ] = 8,
) -> None:
    """Latency per stage (p50/p90/p99), images/s and prompts/s; with --compare-to torch, the speedups."""
    from clipsam.engine.bench import measure as core

    if server is not None:  # the service under load (cli/commands_serve.py)
        from clipsam.cli.commands_serve import bench_server

        sizes = core.parse_size(size)
        raise typer.Exit(
            bench_server(server, concurrency, requests, images, sizes, json_path, baseline, max_regression)
        )
    from clipsam.engine.bench import record as records

    config = core.BenchConfig(stage, warmup, runs, prompts, region_points)
    tolerance = records.parse_fraction(max_regression)
    backend = backend if backend != "auto" else "onnxruntime"
    specs = _specs(
        backend,
        compare_to,
        artifacts,
        providers,
        sam_model,
        checkpoint,
        clip_checkpoint,
        random_weights,
        seed,
    )
    picture_list, images_text = core.bench_images(images, core.parse_size(size))
    _check_outputs(json_path, plot)
    stored = records.read_record(baseline) if baseline is not None else None
    pipelines = _build(specs)
    if "reference" in pipelines:
        core.check_same_weights(pipelines["ours"], pipelines["reference"])
    measurement = _measure(pipelines, picture_list, config)
    described = {name: records.describe_pipeline(specs[name][0], p) for name, p in pipelines.items()}
    record = records.build_record(config, images_text, described, measurement)
    gate = records.compare_to_baseline(record, stored, tolerance) if stored is not None else None
    if gate is not None:
        record["baseline_check"] = {"baseline": str(baseline), **gate.to_json()}
    _write_outputs(record, json_path, plot)
    _print_record(record)
    if gate is not None:
        _print_gate(gate)
        if gate.regressed:
            raise typer.Exit(REGRESSION_EXIT)


def _specs(
    backend, compare_to, artifacts, providers, sam_model, checkpoint, clip_checkpoint, random_weights, seed
):
    """{"ours": (backend, spec), "reference": (backend, spec)}, with one weight choice for both."""
    from clipsam.engine.bench.measure import PipelineSpec, needs_artifacts, reference_choice
    from clipsam.engine.manifest import read_manifest

    names = [backend] + ([compare_to] if compare_to is not None else [])
    on_artifacts = [needs_artifacts(name) for name in names]
    if artifacts is not None and not any(on_artifacts):
        raise ClipsamError(
            "--artifacts is for exported backends (onnxruntime, openvino, tensorrt), not --backend torch"
        )
    if artifacts is not None:
        models = read_manifest(artifacts).data["models"]
        if sam_model is not None and mo.get_model(sam_model, "sam2").name != models["sam2"]["name"]:
            raise ClipsamError(
                f"--sam-model {sam_model} but the artifacts hold {models['sam2']['name']}: export it first"
            )
        if random_weights and (models["sclip"]["seed"] is None or models["sam2"]["seed"] is None):
            raise ClipsamError("--random-weights, but the artifacts were exported from checkpoints: drop it")
        # Only a torch pipeline needs the weights themselves; they must be the artifacts' own.
        needs_choice = not all(on_artifacts)
        choice = reference_choice(models, clip_checkpoint, checkpoint) if needs_choice else None
    else:  # the torch reference's weights, and the engine cache's for the exported backends
        choice = _torch_choice(sam_model, checkpoint, clip_checkpoint, random_weights, seed)
    spec = PipelineSpec(choice, artifacts, providers)
    return {role: (name, spec) for role, name in zip(("ours", "reference"), names, strict=False)}


def _torch_choice(sam_model, checkpoint, clip_checkpoint, random_weights, seed) -> mo.ModelChoice:
    name = mo.get_model(sam_model or "sam2.1-hiera-tiny", "sam2").name
    if random_weights:
        return mo.ModelChoice(None, True, name, None, True, seed)
    clip_path = mo.require_checkpoint(clip_checkpoint, mo.CLIP_NAME, "CLIP")
    sam_path = mo.require_checkpoint(checkpoint, name, "SAM2")
    return mo.ModelChoice(clip_path, False, name, sam_path, False, seed)


def _check_outputs(json_path: Path | None, plot: Path | None) -> None:
    from clipsam.engine import image_io
    from clipsam.engine.bench.plot import require_matplotlib

    if json_path is not None:
        image_io.check_writable(json_path, (".json",))
    if plot is not None:
        image_io.check_writable(plot, (".png",))
        require_matplotlib()


def _build(specs: dict) -> dict:
    from clipsam.engine.bench.measure import build_pipeline

    pipelines = {}
    with stderr.status("loading models") as status:
        for role, (name, spec) in specs.items():
            status.update(f"loading {role} pipeline ({name})")
            pipelines[role] = build_pipeline(name, spec)
    return pipelines


def _measure(pipelines: dict, images: list, config):
    from rich.progress import Progress

    import clipsam.kernels
    from clipsam.engine.bench.measure import PromptSource, StageRunner, bench_vocabulary, measure

    with stderr.status("compiling / loading numba kernels"):
        clipsam.kernels.warmup()  # a one-off cost that would land in whichever pipeline runs first
    source = PromptSource(pipelines["ours"], bench_vocabulary(), config.prompts)
    runners = {
        role: StageRunner(pipeline, config.stage, source, config.region_points)
        for role, pipeline in pipelines.items()
    }
    with Progress(console=stderr, transient=True) as bar:
        task = bar.add_task(f"bench {config.stage}", total=(config.warmup + config.runs) * len(runners))
        return measure(runners, images, config, lambda done, total: bar.update(task, completed=done))


def _write_outputs(record: dict, json_path: Path | None, plot: Path | None) -> None:
    from clipsam.engine.bench.plot import plot_stages
    from clipsam.engine.bench.record import write_record

    if json_path is not None:
        write_record(json_path, record)
        stderr.print(f"wrote {json_path}")
    if plot is not None:
        plot_stages(record, plot)
        stderr.print(f"wrote {plot}")


def _print_record(record: dict) -> None:
    ours, reference = record["ours"], record.get("reference")
    label = " [RANDOM WEIGHTS]" if ours["random_weights"] else ""
    heading = f"clipsam bench --stage {record['config']['stage']}{label} (ms): ours = {_side(ours)}"
    stdout.print(heading + (f", ref = {_side(reference)}" if reference else ""), soft_wrap=True)
    table = Table()
    table.add_column("stage", no_wrap=True)
    for prefix in ("", "ref ") if reference else ("",):
        for quantile in ("p50", "p90", "p99"):
            table.add_column(f"{prefix}{quantile}", justify="right")
    if reference:
        table.add_column("speedup", justify="right")
    for stage, row in ours["stages"].items():
        cells = [f"{row[q]:.1f}" for q in ("p50", "p90", "p99")]
        if reference:
            theirs = reference["stages"].get(stage)
            cells += [f"{theirs[q]:.1f}" for q in ("p50", "p90", "p99")] if theirs else ["-"] * 3
            speedup = record["speedup"].get(stage)
            cells.append(f"×{speedup:.2f}" if speedup else "-")
        table.add_row(stage, *cells)
    stdout.print(table)
    stdout.print(_summary(record))


def _side(result: dict) -> str:
    return f"{result['backend']} {result['precision']}"


def _summary(record: dict) -> Table:
    from clipsam.engine.bench.record import machine_class

    ours, machine, memory = record["ours"], record["machine"], record["memory"]
    grid = Table.grid(padding=(0, 2))
    rows = [
        ("images/s", f"{ours['images_per_s']:.3f}"),
        ("prompts/s", f"{ours['prompts_per_s']:.1f} ({ours['num_prompts']:.0f} prompts per image)"),
        ("backend", f"{ours['backend']} {ours['precision']} {', '.join(ours['providers']) or '-'}"),
        ("decoder", ours.get("decoder", "-")),
        ("model", f"{ours['models']['clip']['name']} + {ours['models']['sam2']['name']}"),
        ("weights", f"{ours['models']['clip']['weights']} / {ours['models']['sam2']['weights']}"),
        ("images", f"{record['config']['images']}, {record['config']['runs']} runs"),
        ("peak RSS", f"{memory['peak_rss_mb']:.0f} MiB (process)"),
        ("machine", f"{machine_class(machine)}, AMX {machine['amx_bf16']}"),
        ("versions", ", ".join(f"{k} {v}" for k, v in record["versions"].items() if v)),
    ]
    if memory["gpu_peak_mb"] is not None:
        rows.append(("GPU peak", f"{memory['gpu_peak_mb']:.0f} MiB"))
    if record.get("agreement"):
        agreement = record["agreement"]
        figure = agreement.get("mean_iou", agreement.get("fraction"))
        rows.append(("agreement", f"{agreement['kind']}: {figure:.4f}"))
    for name, value in rows:
        grid.add_row(name, value)
    return grid


def _print_gate(gate) -> None:
    from clipsam.engine.bench.record import MIN_GATED_MS

    for warning in gate.warnings:
        stderr.print(f"[yellow]warning:[/] {warning}")
    table = Table("stage", "figure", "baseline", "now", "change", title="baseline check")
    for check in gate.checks:
        verdict = "[red]REGRESSED[/]" if check.regressed else "ok"
        table.add_row(
            check.stage,
            check.kind,
            f"{check.baseline:.2f}",
            f"{check.current:.2f}",
            f"{check.change:+.1%} {verdict}",
        )
    stdout.print(table)
    if gate.not_gated:
        stdout.print(
            f"not gated (p50 under {MIN_GATED_MS:g} ms in both records): {', '.join(gate.not_gated)}",
            soft_wrap=True,
        )
    if gate.regressed:
        stderr.print(f"clipsam: regression beyond {gate.max_regression:.0%} against the baseline")


def register(app: typer.Typer) -> None:
    app.command()(bench)
