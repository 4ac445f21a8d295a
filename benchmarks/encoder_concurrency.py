"""SCLIP patch features and the SAM2 embedding of one image: one after the other (each graph with all cores)
against both at once (two threads, each graph single-threaded), exact and `--precision fast`.

    python benchmarks/encoder_concurrency.py ARTIFACTS [--rounds 3] [--size 480x640]

The two stages are independent, so on a machine with many cores running them side by side could beat
running each on all cores; this measures which wins on this machine (interleaved rounds, medians).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

from clipsam.engine.backends.onnxruntime import OrtGraph
from clipsam.engine.backends.openvino import OvGraph
from clipsam.engine.bench.demo_scene import demo_scene
from clipsam.engine.bench.measure import parse_size
from clipsam.engine.dense_clip import DenseConfig
from clipsam.engine.factory import load_pipeline


def single_threaded(pipeline):
    """The pipeline with its SCLIP tower and SAM2 encoder graphs reloaded single-threaded."""
    for holder, attribute in ((pipeline.dense_stage.crops, "tower"), (pipeline.mask_stage, "encoder")):
        graph = getattr(holder, attribute)
        if isinstance(graph, OvGraph):
            setattr(holder, attribute, OvGraph(graph.path, graph.requested_precision, threads=1))
        else:
            setattr(holder, attribute, OrtGraph(graph.path, ["CPUExecutionProvider"], threads=1))
    return pipeline


def compare(artifacts: str, precision: str, image, rounds: int) -> dict:
    config = DenseConfig()
    sequential = load_pipeline(artifacts, "onnxruntime", precision=precision)
    concurrent = single_threaded(load_pipeline(artifacts, "onnxruntime", precision=precision))
    pool = ThreadPoolExecutor(2)

    def one_after_the_other() -> None:
        sequential.features(image, config)
        sequential.embed(image)

    def side_by_side() -> None:
        jobs = [pool.submit(concurrent.features, image, config), pool.submit(concurrent.embed, image)]
        for job in jobs:
            job.result()

    runs = {"sequential": one_after_the_other, "concurrent": side_by_side}
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for round_index in range(rounds + 1):  # round 0 warms up
        names = list(runs) if round_index % 2 == 0 else list(runs)[::-1]
        for name in names:
            start = time.perf_counter()
            runs[name]()
            if round_index:
                samples[name].append((time.perf_counter() - start) * 1000)
    pool.shutdown()
    record = {name: statistics.median(values) for name, values in samples.items()}
    record["concurrent_speedup"] = record["sequential"] / record["concurrent"]
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifacts")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", default="480x640")
    args = parser.parse_args()
    image = demo_scene(*parse_size(args.size))
    record = {"cores": len(os.sched_getaffinity(0)), "load_before": os.getloadavg()[0]}
    for precision in ("exact", "fast"):
        record[precision] = compare(args.artifacts, precision, image, args.rounds)
    record["load_after"] = os.getloadavg()[0]
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
