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


EVAL_IMAGES = 8


def _eval_benchmark(data_dir: Path) -> None:
    """A VOC-20 miniature in its MMSeg layout with EVAL_IMAGES images (random pixels and labels)."""
    import numpy as np

    from clipsam.engine.eval.datasets import SPECS
    from tests.test_eval_fixtures import write_label

    spec, rng = SPECS["voc20"], np.random.default_rng(3)
    root = data_dir / spec.folder
    ids = [f"2007_{index:06d}" for index in range(EVAL_IMAGES)]
    for sample_id in ids:
        image = root / spec.image_dir / f"{sample_id}{spec.image_suffix}"
        image.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(image)
        raw = rng.choice([0, 1, 7, 15, 20, 255], size=(24, 32)).astype(np.uint8)
        write_label(root / spec.label_dir / f"{sample_id}{spec.label_suffix}", raw, palette=True)
    split = root / spec.split_file
    split.parent.mkdir(parents=True, exist_ok=True)
    split.write_text("\n".join(ids) + "\n")


def test_eval_shards_over_both_nodes_with_the_local_metrics(
    cluster, artifacts, tiny_clip_checkpoint, tmp_path, capsys
) -> None:
    """`clipsam eval --address`: the images on actors of both nodes; results.json's confusion matrix and
    metrics equal the local run's exactly (the counts are sums)."""
    import ray

    from clipsam.engine.eval import datasets
    from clipsam.engine.eval.evaluate import evaluate
    from clipsam.serve.batch_data import EvalJob, eval_on_ray
    from tests.cli_helpers import run_cli
    from tests.test_eval_cli import voc20_artifacts

    art = voc20_artifacts(artifacts, tmp_path / "art", tiny_clip_checkpoint, capsys)
    _eval_benchmark(tmp_path / "data")
    common = ["eval", "--dataset", "voc20", "--data-dir", tmp_path / "data", "--artifacts", art]
    code, _, err = run_cli([*common, "--output-dir", tmp_path / "local"], capsys)
    assert code == 0, err
    code, stdout, err = run_cli(
        [*common, "--output-dir", tmp_path / "ray", "--address", cluster.address, "--actors", "2"], capsys
    )
    assert code == 0, err
    assert "voc20 dense: mIoU" in stdout
    local, sharded = (json.loads((tmp_path / name / "results.json").read_text()) for name in ("local", "ray"))
    assert local["num_images"] == sharded["num_images"] == EVAL_IMAGES
    assert sharded["confusion_matrix"] == local["confusion_matrix"]
    assert sharded["metrics"] == local["metrics"] and sharded["per_class"] == local["per_class"]
    # where the images ran: the same job through the API, its lines' nodes
    from clipsam.engine.dense_clip import PRESETS
    from clipsam.engine.pipeline import SegmentOptions

    data = datasets.open_dataset("voc20", tmp_path / "data")
    job = EvalJob(
        "voc20", str(tmp_path / "data"), str(art), "onnxruntime", "dense", False, PRESETS["voc20"],
        SegmentOptions(), 16,
    )  # fmt: skip
    lines = []
    names = datasets.benchmark_vocabulary("voc20").class_names
    evaluate(
        data, None, tmp_path / "api", class_names=names, config={"mode": "dense"},
        runner=eval_on_ray(job, cluster.address, 2, on_line=lines.append),
    )  # fmt: skip
    nodes = {line["node"] for line in lines}
    alive = {node["NodeID"] for node in ray.nodes() if node["Alive"]}
    assert nodes == alive and len(nodes) == 2, f"actors ran on {nodes} of {alive}"
    api = json.loads((tmp_path / "api" / "results.json").read_text())
    assert api["confusion_matrix"] == local["confusion_matrix"]
