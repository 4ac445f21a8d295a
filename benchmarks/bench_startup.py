"""What a `clipsam segment` process costs beyond its pipeline, on the engine cache ("engine by default").

One run measures, side by side and interleaved:
- `process`: the wall time of `clipsam segment --random-weights …` (no --artifacts, no --backend: the cached
  engine), a fresh process per round, after one untimed round that builds or warms the engine;
- `pipeline`: that same process's own `timings_ms.total` (from its JSON);
- `in_process`: `Pipeline.segment` on a warm pipeline of the same engine in this process, same options.
extra_info gets the medians, the difference process − pipeline (the start-up and exit), the ratio
pipeline / in_process (the engine's stages cost the same in a fresh process) and the load average.

Enabled (`python -m pytest benchmarks/bench_startup.py --benchmark-enable -q`): SCLIP ViT-B/16 + SAM2.1 tiny
with random weights, the 480×640 demo scene, `-V sky car road tree building --min-confidence 0`, 5 rounds;
the engine is built in a temp cache on first use (minutes) unless CLIPSAM_BENCH_CACHE=DIR names a cache
that holds it. Disabled (the default test run): the same on the tiny golden CLIP, one round, nothing timed
is asserted. No speed is asserted either way: the figures go to benchmarks/README.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from harness import benchmarks_enabled
from PIL import Image

from clipsam.engine.bench.demo_scene import demo_scene
from clipsam.engine.bench.record import library_versions, machine_info

WORDS = ["sky", "car", "road", "tree", "building"]
ROUNDS = 5
TIMEOUT_S = 900


@pytest.fixture(scope="module")
def setting(tmp_path_factory, request: pytest.FixtureRequest) -> dict:
    enabled = benchmarks_enabled(request.config)
    folder = tmp_path_factory.mktemp("startup")
    image = folder / "scene.png"
    Image.fromarray(demo_scene(480, 640) if enabled else demo_scene(96, 128)).save(image)
    cache = Path(os.environ.get("CLIPSAM_BENCH_CACHE") or folder / "cache")
    weights = ["--random-weights"]
    if not enabled:
        weights += ["--clip-checkpoint", str(request.getfixturevalue("tiny_clip_checkpoint"))]
    args = ["segment", "--image", str(image), "-V", *WORDS, "--min-confidence", "0", *weights]
    return {"enabled": enabled, "folder": folder, "cache": cache, "args": args, "image": image}


def _process(setting: dict, index: int) -> tuple[float, dict]:
    """(wall seconds of one `clipsam segment` process, its JSON record)."""
    out = setting["folder"] / f"run{index}"
    command = ["clipsam", *setting["args"], "--output", f"{out}.png", "--json", f"{out}.json"]
    env = {**os.environ, "CLIPSAM_CACHE_DIR": str(setting["cache"])}
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=TIMEOUT_S)
    wall = time.perf_counter() - start
    assert done.returncode == 0, done.stderr[-3000:]
    return wall, json.loads(Path(f"{out}.json").read_text())


def _in_process(setting: dict, record: dict):
    """A warm pipeline on the engine the process ran, and a call of its `segment` with the same options."""
    from clipsam.engine.factory import load_pipeline
    from clipsam.engine.pipeline import SegmentOptions
    from clipsam.engine.vocabulary import user_vocabulary

    pipeline = load_pipeline(record["models"]["artifacts"], "onnxruntime")
    image = np.asarray(Image.open(setting["image"]).convert("RGB"))
    vocabulary, options = user_vocabulary(WORDS), SegmentOptions(min_confidence=0.0)
    pipeline.segment(image, vocabulary, options)  # warm
    return lambda: pipeline.segment(image, vocabulary, options).timings_ms["total"] / 1000


@pytest.mark.benchmark(group="startup")
def test_process_wall_against_its_pipeline(benchmark, setting) -> None:
    _, first = _process(setting, 0)  # builds the engine (or warms the OS caches)
    assert first["models"]["backend"] == "onnxruntime" and first["models"].get("engine")
    in_process = _in_process(setting, first)
    rounds = ROUNDS if setting["enabled"] else 1
    walls, pipelines, warm = [], [], []
    for index in range(1, rounds + 1):  # interleaved: a quiet spell helps both sides alike
        wall, record = _process(setting, index)
        walls.append(wall)
        pipelines.append(record["timings_ms"]["total"] / 1000)
        warm.append(in_process())
        assert record["models"]["engine"] == first["models"]["engine"]
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    process_s, pipeline_s, warm_s = (float(np.median(values)) for values in (walls, pipelines, warm))
    machine = machine_info()
    benchmark.extra_info.update(
        {
            "process_median_s": process_s,
            "pipeline_median_s": pipeline_s,
            "in_process_median_s": warm_s,
            "outside_pipeline_s": process_s - pipeline_s,
            "pipeline_over_in_process": pipeline_s / warm_s,
            "rounds": rounds,
            "load_average": os.getloadavg()[0],
            "machine": f"{machine['cpu_model']}, {machine['usable_cores']} cores",
            **library_versions(),
        }
    )
    assert all(wall > pipeline for wall, pipeline in zip(walls, pipelines, strict=True))
    print(
        f"\nprocess {process_s:.2f} s, pipeline {pipeline_s:.2f} s "
        f"(outside it {process_s - pipeline_s:.2f} s), warm in-process {warm_s:.2f} s, "
        f"load {os.getloadavg()[0]:.2f}",
        file=sys.stderr,
    )
