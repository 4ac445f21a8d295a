"""`clipsam segment --images …`: many images on one warm pipeline (engine/batch/), with a progress bar, a
warning per failed image, a summary line and the exit code: 0 all done, 1 some failed, 2 usage errors,
130 stopped by Ctrl-C (the images in flight finish; `--resume` goes on)."""

from __future__ import annotations

import shlex
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from clipsam.engine.errors import ClipsamError

stderr = Console(stderr=True, soft_wrap=True)
stdout = Console()
SOME_FAILED_EXIT = 1
INTERRUPTED_EXIT = 130
BATCH = "Many images (--images)"

ImagesOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--images",
        metavar="PATH...",
        help="Run many images on one warm engine: folders (recursive; PNG / JPEG / WebP / TIFF / BMP by "
        "content, hidden files skipped), globs or .txt lists (one path per line), several after one flag. "
        "Needs --out-dir; exit 0 all done, 1 some failed.",
        rich_help_panel=BATCH,
    ),
]
OutDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--out-dir",
        help="Folder of --images' outputs: per image NAME.json (as --json) and NAME.png (unless "
        "--no-picture), mirroring the relative paths; results.jsonl, errors.jsonl, annotations.json (COCO).",
        rich_help_panel=BATCH,
    ),
]
ResumeOpt = Annotated[
    bool,
    typer.Option(
        "--resume",
        help="Skip the images whose JSON is in --out-dir already (same options).",
        rich_help_panel=BATCH,
    ),
]
NoPictureOpt = Annotated[
    bool, typer.Option("--no-picture", help="--images: write the JSON only.", rich_help_panel=BATCH)
]
AddressOpt = Annotated[
    str | None,
    typer.Option(
        "--address",
        help="--images on an existing Ray cluster (auto, or ray://HOST:PORT) with Ray Data: an actor pool, "
        "one warm engine per actor; --out-dir must be a folder every node sees.",
        rich_help_panel=BATCH,
    ),
]
InFlightOpt = Annotated[
    int | None,
    typer.Option(
        "--in-flight",
        min=1,
        help="--images: images in memory at once (≥ 2 overlaps the next image's encoders with the current "
        "one's decode and files). [default: chosen from the core count]",
        rich_help_panel=BATCH,
    ),
]
ActorsOpt = Annotated[
    int, typer.Option("--actors", min=1, help="--address: the most Ray Data actors.", rich_help_panel=BATCH)
]


def check_inputs(image, images, given: dict[str, bool], batch_only: bool) -> None:
    """--image or --images; with --images, none of the one-image options (`given`: flag → given); without,
    none of the batch ones (batch_only)."""
    if images:
        for flag, on in given.items():
            if on:
                hint = "--out-dir" if flag in ("--output", "--json", "--image") else f"drop {flag}"
                raise ClipsamError(f"--images does not take {flag}: {hint} (or one image with --image)")
    elif image is None:
        raise ClipsamError("give --image FILE (one image) or --images PATH ... --out-dir FOLDER (many)")
    elif batch_only:
        raise ClipsamError(
            "--out-dir, --resume and --address go with --images PATH ...: add it, or drop them"
        )


def settings(vocabulary, options, *, edit: str, target, no_picture: bool, max_pixels: int):
    from clipsam.engine.batch.work import BatchSettings

    return BatchSettings(vocabulary, options, edit, target, None if no_picture else ".png", max_pixels)


def run_images(
    sources: list[str],
    out_dir: Path | None,
    build_pipeline,
    settings,
    backend: str = "onnxruntime",
    *,
    resume: bool,
    in_flight: int | None,
    verbose: bool,
    address: str | None = None,
    actors: int = 2,
    providers: str = "auto",
    precision: str = "exact",
) -> None:
    """Collect the images, check the outputs, load the pipeline once, run (here or on Ray), report, exit."""
    from clipsam.engine.batch.runner import in_flight_for_cores, run_batch
    from clipsam.engine.batch.sources import collect_images
    from clipsam.engine.batch.work import BatchOutputs, ImageWork

    if out_dir is None:
        raise ClipsamError("--images needs --out-dir FOLDER (where the per-image JSON and pictures go)")
    if address is not None and backend == "torch":
        raise ClipsamError("--address runs the engine on the cluster: drop --backend torch")
    items = collect_images(sources)
    out = BatchOutputs(out_dir, settings)
    out.check(items)
    with stderr.status("loading models"):
        pipeline = build_pipeline()
    out.start(pipeline.models, resume)
    stop = threading.Event()
    with _progress(len(items), verbose) as on_line, _stop_on_interrupt(stop):
        if address is not None:
            from clipsam.serve.batch_data import run_on_ray

            artifacts = Path(pipeline.models["artifacts"])
            summary = run_on_ray(
                items, out, settings, artifacts, backend, providers, precision, address, actors,
                resume=resume, on_line=on_line,
            )  # fmt: skip
        else:
            work, depth = ImageWork(pipeline, settings, out), in_flight or in_flight_for_cores()
            summary = run_batch(items, work, out, resume=resume, in_flight=depth, on_line=on_line, stop=stop)
    _report(summary, out.folder, pipeline.random_weights, resume)


@contextmanager
def _progress(total: int, verbose: bool) -> Iterator:
    """A rich progress bar on stderr (done / total, images/s, ETA, failures); yields the per-line callback,
    which also prints a warning per failed image (and, verbose, each image's stage timings)."""
    columns = (TextColumn("images"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"))
    columns += (TimeRemainingColumn(), TextColumn("{task.fields[failed]} failed"))
    with Progress(*columns, console=stderr, transient=True) as bar:
        task = bar.add_task("images", total=total, rate="", failed=0)
        failed = [0]

        def on_line(line: dict) -> None:
            if line["status"] == "failed":
                failed[0] += 1
                stderr.print(f"[yellow]warning:[/] {line['image']}: {line['error']}", highlight=False)
            elif verbose and line["status"] == "done":
                stages = ", ".join(f"{k} {v:.0f}" for k, v in line["timings_ms"].items())
                stderr.print(f"{line['image']}: {line['segments']} segments; ms: {stages}", highlight=False)
            speed = bar.tasks[0].speed
            bar.update(task, advance=1, failed=failed[0], rate=f"{speed:.2f} images/s" if speed else "")

        yield on_line


def _report(summary, folder: Path, random_weights: bool, resume: bool) -> None:
    if random_weights:
        stderr.print("[yellow]warning:[/] random weights: the masks are not real predictions")
    stdout.print(summary.text(), highlight=False)
    stdout.print(f"wrote {folder} (annotations.json, results.jsonl)", highlight=False)
    if summary.interrupted:
        again = shlex.join(["clipsam", *sys.argv[1:]]) + ("" if resume else " --resume")
        stderr.print(f"stopped: to go on, run {again}", highlight=False)
        raise typer.Exit(INTERRUPTED_EXIT)
    if summary.failed:
        stderr.print(f"{summary.failed} images failed: see {folder / 'errors.jsonl'}", highlight=False)
        raise typer.Exit(SOME_FAILED_EXIT)


class _stop_on_interrupt:
    """The first Ctrl-C asks the run to stop after the images in flight; a second one stops at once."""

    def __init__(self, stop: threading.Event):
        self.stop, self.before = stop, None

    def _handler(self, signum, frame) -> None:
        if self.stop.is_set():
            raise KeyboardInterrupt
        self.stop.set()
        stderr.print("stopping after the images in flight (Ctrl-C again to stop at once)")

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.before = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        if self.before is not None:
            signal.signal(signal.SIGINT, self.before)
