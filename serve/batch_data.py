"""`clipsam segment --images … --address auto|ray://HOST:PORT`: the batch runner's per-image work
(engine/batch/work.py, ImageWork.run) on a Ray Data actor pool of an existing cluster.

The images' paths are a dataset; `map_batches` runs them on an `ActorPoolStrategy` pool of --actors actors
(spread over the nodes, one CPU each), each loading the engine (the artifacts folder the driver resolved,
which every node must see, like --out-dir) once and warming it on its first image. Actors write each
image's JSON and picture into --out-dir; the driver gets one line per image back (results.jsonl,
errors.jsonl, the progress bar) and writes annotations.json from the per-image JSON at the end, as the local
run does: the same folder, the same COCO file.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from clipsam.engine.batch.runner import Summary, Tally, attempt
from clipsam.engine.batch.sources import BatchImage
from clipsam.engine.batch.work import BatchOutputs, BatchSettings

ACTOR_CPUS = 1


class ImageActor:
    """One warm pipeline per actor; a batch of paths in, one results line (JSON text) per image out."""

    def __init__(
        self, settings: BatchSettings, folder: str, artifacts: str, backend: str, providers, precision
    ):
        import ray

        from clipsam.engine.batch.work import ImageWork
        from clipsam.engine.factory import load_pipeline

        pipeline = load_pipeline(Path(artifacts), backend, providers=providers, precision=precision)
        self.work = ImageWork(pipeline, settings, BatchOutputs(Path(folder), settings))
        self.node = ray.get_runtime_context().get_node_id()

    def __call__(self, batch: dict) -> dict:
        lines = []
        for name, path in zip(batch["name"], batch["path"], strict=True):
            item = BatchImage(str(name), Path(str(path)))
            line = attempt(item, lambda item=item: self.work.run(item))
            lines.append(json.dumps({**line, "node": self.node}))
        return {"line": lines}


def run_on_ray(
    items: list[BatchImage],
    out: BatchOutputs,
    settings: BatchSettings,
    artifacts: Path,
    backend: str,
    providers: str,
    precision: str,
    address: str,
    actors: int,
    *,
    resume: bool = False,
    on_line: Callable[[dict], None] | None = None,
) -> Summary:
    """Run `items` on the cluster at `address` (joined unless this process is connected already); `out.start`
    has been called."""
    import ray
    from ray import data

    from clipsam.serve.runner import join_cluster

    if not ray.is_initialized():
        join_cluster(address)
    tally = Tally(items, out, resume, on_line)
    todo = tally.todo
    if todo:
        paths = data.from_items([{"name": item.name, "path": str(item.path)} for item in todo])
        lines = paths.map_batches(
            ImageActor,
            batch_size=1,
            compute=data.ActorPoolStrategy(min_size=actors, max_size=actors),
            num_cpus=ACTOR_CPUS,
            scheduling_strategy="SPREAD",  # one actor per node first: the cluster's memory and cores
            fn_constructor_kwargs={
                "settings": settings,
                "folder": str(out.folder.resolve()),
                "artifacts": str(artifacts.resolve()),
                "backend": backend,
                "providers": providers,
                "precision": precision,
            },
        )
        for row in lines.iter_rows():
            tally.record(json.loads(row["line"]))
    return tally.finish()
