"""`clipsam segment --images … --address auto|ray://HOST:PORT`: the batch runner's per-image work
(engine/batch/work.py, ImageWork.run) on a Ray Data actor pool of an existing cluster.

The images' paths are a dataset; `map_batches` runs them on an `ActorPoolStrategy` pool of --actors actors
(spread over the nodes, one CPU each), each loading the engine (the artifacts folder the driver resolved,
which every node must see, like --out-dir) once and warming it on its first image. Actors write each
image's JSON and picture into --out-dir; the driver gets one line per image back (results.jsonl,
errors.jsonl, the progress bar) and writes annotations.json from the per-image JSON at the end, as the local
run does: the same folder, the same COCO file.

`clipsam eval --address` runs the benchmark the same way (`eval_on_ray`): the sample ids as a dataset,
EvalActors that each rebuild the dataset reader and the mode's predictor once, one line per image with its
confusion counts back to the driver, which sums them into the run's matrix and state file as a local run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from clipsam.engine.batch.runner import Summary, Tally, attempt
from clipsam.engine.batch.sources import BatchImage
from clipsam.engine.batch.work import BatchOutputs, BatchSettings

if TYPE_CHECKING:
    from clipsam.engine.dense_clip import DenseConfig
    from clipsam.engine.pipeline import SegmentOptions

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


@dataclass(frozen=True)
class EvalJob:
    """What an eval actor rebuilds on its node: the dataset (by name and folder, which every node must see),
    the engine (the artifacts folder the driver resolved), and the mode's predictor settings, as
    `clipsam eval` builds them locally (engine/eval/modes.py, ModePredictor)."""

    dataset: str
    data_dir: str
    artifacts: str
    backend: str
    mode: str
    use_pamr: bool
    dense: DenseConfig
    options: SegmentOptions
    vote_points: int
    vis_dir: str | None = None
    random_weights: bool = False

    def work(self):
        """(the EvalWork of this job on a freshly loaded pipeline, the dataset)."""
        from clipsam.engine.eval import datasets
        from clipsam.engine.eval.evaluate import EvalWork
        from clipsam.engine.eval.modes import ModePredictor
        from clipsam.engine.factory import load_pipeline

        data = datasets.open_dataset(self.dataset, Path(self.data_dir))
        vocabulary = datasets.benchmark_vocabulary(self.dataset)
        stages = ("dense",) if self.mode == "dense" else ("dense", "masks")
        pipeline = load_pipeline(Path(self.artifacts), self.backend, stages=stages)
        predictor = ModePredictor(
            pipeline, vocabulary, self.dense, mode=self.mode, use_pamr=self.use_pamr,
            has_background=data.spec.has_background, options=self.options,
            vote_points_per_side=self.vote_points,
        )  # fmt: skip
        vis = Path(self.vis_dir) if self.vis_dir else None
        work = EvalWork(
            data, predictor, vocabulary.class_names, vis_dir=vis, random_weights=self.random_weights
        )
        return work, data


class EvalActor:
    """One warm predictor per actor; a batch of sample ids in, one EvalWork line (JSON text) per image out."""

    def __init__(self, job: EvalJob):
        import ray

        self.work, dataset = job.work()
        self.samples = {sample.sample_id: sample for sample in dataset.samples}
        self.node = ray.get_runtime_context().get_node_id()

    def __call__(self, batch: dict) -> dict:
        lines = []
        for sample_id in batch["sample"]:
            sample = self.samples[str(sample_id)]
            line = attempt(sample, lambda sample=sample: self.work.run(sample), self.work.failed)
            lines.append(json.dumps({**line, "node": self.node}))
        return {"line": lines}


def eval_on_ray(job: EvalJob, address: str, actors: int, on_line: Callable[[dict], None] | None = None):
    """The Runner of engine/eval/evaluate.py's `evaluate` for the cluster at `address`: the samples still to
    count as a dataset, `map_batches` over an actor pool of `actors` EvalActors, each line back to the
    record (which sums the confusion counts: the order the images finish in does not change the metrics).
    on_line: also given each line (with the actor's "node")."""

    def run(todo: list, record: Callable[[dict], None]) -> None:
        import ray
        from ray import data

        from clipsam.serve.runner import join_cluster

        if not todo:
            return
        if not ray.is_initialized():
            join_cluster(address)
        ids = data.from_items([{"sample": sample.sample_id} for sample in todo])
        lines = ids.map_batches(
            EvalActor,
            batch_size=1,
            compute=data.ActorPoolStrategy(min_size=actors, max_size=actors),
            num_cpus=ACTOR_CPUS,
            scheduling_strategy="SPREAD",
            fn_constructor_kwargs={"job": job},
        )
        for row in lines.iter_rows():
            line = json.loads(row["line"])
            if on_line is not None:
                on_line(line)
            record(line)

    return run
