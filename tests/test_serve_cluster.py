"""Scale-out: the service on a two-node Ray cluster on this machine (ray.cluster_utils.Cluster, both nodes on
127.0.0.1), decoder replicas spread one per node; then one decoder replica is killed mid-load and every
request is still answered (200, or 503 that a retry turns into 200)."""

from __future__ import annotations

import base64
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image

from clipsam.engine.bench.demo_scene import demo_scene
from clipsam.serve.config import StageResources
from tests.serve_helpers import post_json, small_config, two_node_cluster

MAX_TRIES = 24  # requests sent until both decoder replicas have answered (random routing: p(miss) = 2^-23)


@pytest.fixture(scope="module")
def cluster(artifacts: Path):
    with two_node_cluster(num_cpus=1, object_store_mb=300, with_serve=True) as nodes:
        yield nodes


@pytest.fixture(scope="module")
def service(cluster, artifacts: Path):
    from clipsam.serve.runner import start_service

    decoder = StageResources(num_replicas=2, num_cpus=0.25, max_ongoing_requests=16, max_replicas_per_node=1)
    config = small_config(artifacts, decoder=decoder, proxy_location="HeadOnly")
    running = start_service(config, address=cluster.address, timeout_s=300)
    assert not running.owns_ray
    yield running
    running.stop()


@pytest.fixture(scope="module")
def body(tmp_path_factory) -> dict:
    path = tmp_path_factory.mktemp("cluster") / "scene.png"
    Image.fromarray(demo_scene(96, 128)).save(path)
    image = base64.b64encode(path.read_bytes()).decode()
    return {"image": image, "vocabulary": ["sky", "car", "road"], "min_confidence": 0.0}


def decoder_of(headers) -> tuple[str, str]:
    node, replica = headers["X-Clipsam-Decoder"].split()
    return node, replica


def test_decoder_replicas_serve_from_both_nodes(service, body):
    import ray

    alive = {node["NodeID"] for node in ray.nodes() if node["Alive"]}
    assert len(alive) == 2
    seen, answers = {}, []
    with ThreadPoolExecutor(4) as pool:
        for _ in range(MAX_TRIES // 4):
            for status, headers, answer in pool.map(
                lambda _: post_json(f"{service.url}/v1/segment", body), range(4)
            ):
                assert status == 200, answer
                node, replica = decoder_of(headers)
                seen[replica] = node
                answers.append(json.loads(answer))
            if len(seen) == 2:
                break
    assert set(seen.values()) == alive  # two replicas, one on each node, both answered
    first = {key: value for key, value in answers[0].items() if key != "timings_ms"}
    assert all({k: v for k, v in a.items() if k != "timings_ms"} == first for a in answers)


def test_a_killed_decoder_replica_costs_no_request(service, body):
    import ray

    from clipsam.client import Client

    _, headers, _ = post_json(f"{service.url}/v1/segment", body)
    _, victim = decoder_of(headers)
    names = [
        actor
        for actor in ray.util.list_named_actors(all_namespaces=True)
        if "Sam2Decoder" in actor["name"] and actor["name"].endswith(victim)
    ]
    assert len(names) == 1, names
    client = Client(service.url, retries=30, retry_wait_s=1.0)
    with ThreadPoolExecutor(4) as pool:
        in_flight = [pool.submit(post_json, f"{service.url}/v1/segment", body) for _ in range(8)]
        ray.kill(ray.get_actor(names[0]["name"], namespace=names[0]["namespace"]), no_restart=True)
        statuses = [future.result()[0] for future in in_flight]
    assert set(statuses) <= {200, 503}, statuses
    for _ in range(statuses.count(503)):  # what the client does with a 503: retry
        assert client.segment(base64.b64decode(body["image"]), body["vocabulary"], min_confidence=0.0)
    after = [post_json(f"{service.url}/v1/segment", body)[0] for _ in range(4)]
    assert after == [200] * 4
