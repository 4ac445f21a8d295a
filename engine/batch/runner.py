"""The batch runner: which images to run (resume), the bounded overlap of the two halves of each image's
work, failures that do not stop the run, a stop request that lets the images in flight finish, the logs and
the COCO file at the end.

in_flight = K: at most K images are in memory at once. K = 1 runs each image whole in the calling thread;
K ≥ 2 starts the next images (read + encoders, ImageWork.start) in a second thread while the calling thread
finishes the current one (decoder, merge, RLE, files), in order. `in_flight_for_cores` is the measured
choice per core count (benchmarks/README.md, "Many images").
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from queue import Queue
from typing import Any, Protocol

from clipsam.engine.batch.sources import BatchImage
from clipsam.engine.batch.work import BatchOutputs, failed_line, skipped_line
from clipsam.engine.errors import ClipsamError

Line = dict


class Work(Protocol):
    """One item's work in two halves (`start`: reading and the encoders; `finish`: the rest → the item's
    line), or whole (`run`). `failed(item, reason)` is the line of an item whose work raised. ImageWork
    (`segment --images`) and engine/eval/evaluate.py's EvalWork (`clipsam eval`) are the two kinds."""

    def start(self, item: Any) -> Any: ...

    def finish(self, started: Any) -> Line: ...

    def run(self, item: Any) -> Line: ...

    def failed(self, item: Any, reason: str) -> Line: ...


@dataclass(frozen=True)
class Summary:
    total: int
    done: int
    failed: int
    skipped: int
    seconds: float
    interrupted: bool

    @property
    def images_per_s(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0

    def text(self) -> str:
        rate = f"{self.images_per_s:.2f} images/s" if self.done else "no image run"
        state = "stopped" if self.interrupted else "finished"
        return (
            f"{state}: {self.done} done, {self.failed} failed, {self.skipped} skipped of {self.total} "
            f"in {self.seconds:.1f} s ({rate})"
        )


def in_flight_for_cores(cores: int | None = None) -> int:
    """Images in memory at once, by usable core count: 1 on up to 2 cores (measured: overlapping gains
    nothing there, the encoders use both cores already), 2 on more (the next image's encoders beside the
    current one's decode and files; benchmarks/bench_batch.py measures it on the machine at hand)."""
    usable = cores if cores is not None else len(os.sched_getaffinity(0))
    return 2 if usable > 2 else 1


def attempt(
    item: Any, step: Callable[[], object], failed: Callable[[Any, str], Line] = failed_line
) -> object:
    """step() or, when it raises, the item's failed line (a user error's own message; anything else as an
    internal error with its type): one item's error is recorded, not raised (the record decides whether the
    run goes on: `segment --images` does, `eval` stops)."""
    try:
        return step()
    except ClipsamError as err:
        return failed(item, str(err))
    except Exception as err:  # noqa: BLE001 - recorded for this image, the run goes on
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        return failed(item, f"internal error: {type(err).__name__}: {first}")


def pending_images(items: list[BatchImage], out: BatchOutputs, resume: bool) -> list[BatchImage]:
    return [item for item in items if not (resume and out.complete(item) is not None)]


class Tally:
    """The run's bookkeeping, local or on Ray: each finished image's line into the logs (a failed image's
    stale outputs removed), the counts and the summary. Skipped images (complete already) are counted at
    once."""

    def __init__(
        self,
        items: list[BatchImage],
        out: BatchOutputs,
        resume: bool,
        on_line: Callable[[Line], None] | None = None,
    ):
        self.items, self.out, self.on_line = items, out, on_line
        self.begin = time.perf_counter()
        self.todo = pending_images(items, out, resume)
        self._by_name = {item.name: item for item in self.todo}
        self.counts = {"done": 0, "failed": 0, "skipped": 0}
        for item in items:
            if item.name not in self._by_name:
                self.record(skipped_line(item))

    def record(self, line: Line) -> None:
        self.counts[line["status"]] += 1
        if line["status"] == "failed":
            self.out.forget(self._by_name[line["image"]])
        if line["status"] != "skipped":
            self.out.log(line)
        if self.on_line is not None:
            self.on_line(line)

    def finish(self) -> Summary:
        """annotations.json from every complete image, then the summary."""
        self.out.write_annotations(self.items)
        done, failed, skipped = (self.counts[key] for key in ("done", "failed", "skipped"))
        interrupted = done + failed + skipped < len(self.items)
        seconds = time.perf_counter() - self.begin
        return Summary(len(self.items), done, failed, skipped, seconds, interrupted)


def run_batch(
    items: list[BatchImage],
    work: Work,
    out: BatchOutputs,
    *,
    resume: bool = False,
    in_flight: int = 1,
    on_line: Callable[[Line], None] | None = None,
    stop: threading.Event | None = None,
) -> Summary:
    """Run `items` (sorted) into `out`; `out.start` has been called. Returns the summary once the COCO file
    is written. stop: set it (Ctrl-C) to start no new image; the ones in flight finish and are kept."""
    tally = Tally(items, out, resume, on_line)
    run_items(tally.todo, work, tally.record, in_flight=in_flight, stop=stop)
    return tally.finish()


def run_items(
    todo: Iterable[Any],
    work: Work,
    record: Callable[[Line], None],
    *,
    in_flight: int = 1,
    stop: threading.Event | None = None,
) -> None:
    """Each item of `todo` through `work`, its line to record() in the items' order: whole in this thread
    (in_flight 1), or with the next items started ahead (at most in_flight held at once). A stop request
    starts no new item; an exception of record() ends the run (the items started ahead are dropped)."""
    stop = stop or threading.Event()
    if in_flight <= 1:
        for item in todo:
            if stop.is_set():
                break
            record(attempt(item, lambda item=item: work.run(item), work.failed))
    else:
        _overlapped(list(todo), work, in_flight, record, stop)


def _overlapped(
    todo: list[Any], work: Work, in_flight: int, record: Callable[[Line], None], stop: threading.Event
) -> None:
    """A starter thread runs work.start ahead, at most in_flight items held at once (a semaphore taken
    before a start, given back after the finish); this thread finishes them in order. A start that failed
    is its failed line already (a dict); any other value is a started item."""
    room = threading.Semaphore(in_flight)
    started: Queue = Queue()
    end = object()

    def starter() -> None:
        try:
            for item in todo:
                room.acquire()
                if stop.is_set():
                    break
                started.put((item, attempt(item, lambda item=item: work.start(item), work.failed)))
        finally:
            started.put(end)

    thread = threading.Thread(target=starter, name="batch-start", daemon=True)
    thread.start()
    try:
        while (entry := started.get()) is not end:
            item, half = entry
            line = (
                half
                if isinstance(half, dict)
                else attempt(item, lambda half=half: work.finish(half), work.failed)
            )
            record(line)
            room.release()
    finally:
        stop.set()  # an error here (or an interrupt) stops the starter at its next image
        room.release()
        thread.join()
