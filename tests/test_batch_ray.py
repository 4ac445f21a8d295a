"""`--images --address`: the same batch on a Ray Data actor pool of a two-node cluster on this machine
(ray.cluster_utils.Cluster, both nodes on 127.0.0.1): actors on both nodes, and the same per-image JSON and
annotations.json as the local run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from clipsam.engine.bench.demo_scene import demo_scene
from tests.conftest import rng_image
from tests.serve_helpers import two_node_cluster

WORDS = ["sky", "car", "road", "background"]
IMAGES = 8


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ray-batch") / "images"
    root.mkdir()
    for index in range(IMAGES):
        pixels = demo_scene(64, 96) if index % 2 else rng_image(64, 96, seed=index)
        Image.fromarray(pixels).save(root / f"img{index}.png")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    return root


@pytest.fixture(scope="module")
def cluster():
    with two_node_cluster(num_cpus=2, object_store_mb=200) as nodes:
        yield nodes


def _settings():
    from clipsam.engine.batch.work import BatchSettings
    from clipsam.engine.pipeline import SegmentOptions
    from clipsam.engine.vocabulary import user_vocabulary

    return BatchSettings(user_vocabulary(WORDS), SegmentOptions(min_confidence=0.0))


def _run_local(folder: Path, artifacts: Path, out: Path):
    from clipsam.engine.batch.runner import run_batch
    from clipsam.engine.batch.sources import collect_images
    from clipsam.engine.batch.work import BatchOutputs, ImageWork
    from clipsam.engine.factory import load_pipeline

    pipeline = load_pipeline(artifacts, "onnxruntime")
    outputs = BatchOutputs(out, _settings())
    outputs.start(pipeline.models, resume=False)
    return run_batch(collect_images([str(folder)]), ImageWork(pipeline, _settings(), outputs), outputs)


def test_actors_on_both_nodes_write_what_the_local_run_writes(cluster, folder, artifacts, tmp_path) -> None:
    from clipsam.engine.batch.sources import collect_images
    from clipsam.engine.batch.work import BatchOutputs
    from clipsam.engine.factory import load_pipeline
    from clipsam.serve.batch_data import run_on_ray

    local = _run_local(folder, artifacts, tmp_path / "local")
    assert (local.done, local.failed) == (IMAGES, 1)
    out = tmp_path / "ray"
    outputs = BatchOutputs(out, _settings())
    outputs.start(load_pipeline(artifacts, "onnxruntime").models, resume=False)
    lines = []
    items = collect_images([str(folder)])
    summary = run_on_ray(
        items, outputs, _settings(), artifacts, "onnxruntime", "auto", "exact", cluster.address, 2,
        on_line=lines.append,
    )  # fmt: skip
    assert (summary.done, summary.failed) == (IMAGES, 1)
    nodes = {line["node"] for line in lines if line["status"] == "done"}
    alive = {node["NodeID"] for node in __import__("ray").nodes() if node["Alive"]}
    assert nodes == alive and len(nodes) == 2, f"actors ran on {nodes} of {alive}"
    for path in sorted((tmp_path / "local").glob("img*.json")):
        mine, theirs = json.loads((out / path.name).read_text()), json.loads(path.read_text())
        mine.pop("timings_ms"), theirs.pop("timings_ms")
        assert mine == theirs
    annotations = (out / "annotations.json").read_bytes()
    assert annotations == (tmp_path / "local" / "annotations.json").read_bytes()
    assert [line["image"] for line in map(json.loads, (out / "errors.jsonl").read_text().splitlines())] == [
        "broken.png"
    ]
