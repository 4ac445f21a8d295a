"""Helpers of the service tests: a free local port, raw HTTP requests, and a small-resource ServeConfig."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

from clipsam.serve.config import ServeConfig, StageResources


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def small_config(artifacts, **changes) -> ServeConfig:
    """Quarter-CPU replicas (they fit a 2-core machine), a short batch wait, a free port on 127.0.0.1."""
    stage = StageResources(num_cpus=0.25)
    config = ServeConfig(
        str(artifacts),
        port=free_port(),
        sclip=stage,
        encoder=stage,
        decoder=replace(stage, max_ongoing_requests=16),
        ingress=StageResources(num_cpus=0.1, max_ongoing_requests=64),
        cache_bytes=256 << 20,
        request_timeout_s=120.0,
    )
    return replace(config, **changes)


def http(method: str, url: str, body: bytes | None = None, content_type: str | None = None, timeout=120):
    """(status, headers, body) of one request; HTTP errors are answers too."""
    headers = {"Content-Type": content_type} if content_type else {}
    request = urllib.request.Request(url, data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


def post_json(url: str, record: dict, timeout=120):
    return http("POST", url, json.dumps(record).encode(), "application/json", timeout)


def without_timings(record: dict) -> dict:
    return {key: value for key, value in record.items() if key != "timings_ms"}


def sample_images() -> list[bytes]:
    """A few small picture files (PNG RGB / grey / RGBA, JPEG) for generated requests."""
    import io

    import numpy as np
    from PIL import Image

    from clipsam.engine.bench.demo_scene import demo_scene

    pictures = [Image.fromarray(demo_scene(24, 32, seed=seed)) for seed in range(2)]
    pictures += [pictures[0].convert("L"), pictures[1].convert("RGBA")]
    files = []
    for index, picture in enumerate([*pictures, pictures[0]]):
        stream = io.BytesIO()
        picture.save(stream, format="JPEG" if index == len(pictures) else "PNG")
        files.append(stream.getvalue())
    assert len({np.asarray(Image.open(io.BytesIO(data))).shape for data in files}) > 1
    return files


def register_image_formats() -> None:
    """schemathesis hooks: the OpenAPI `image` fields (format byte: base64; binary: the file) get real
    picture files, so a schema-valid request is one the service must accept (a 2xx)."""
    import base64

    import schemathesis
    from hypothesis import strategies as st

    files = sample_images()
    schemathesis.openapi.format("byte", st.sampled_from([base64.b64encode(data).decode() for data in files]))
    schemathesis.openapi.format("binary", st.sampled_from(files))


def register_schemathesis_hooks() -> None:
    """The hooks of the contract test's schemathesis run (each below says what it does and why)."""
    register_image_formats()
    register_vocabulary_rule()
    register_form_wire_rule()


def register_vocabulary_rule() -> None:
    """schemathesis hook: drop generated bodies whose vocabulary names one class twice. The rule (an item's
    first synonym is its class name, unique ignoring case and surrounding spaces) is in the document's
    description; JSON Schema's uniqueItems compares whole items exactly and cannot say it."""
    import schemathesis

    @schemathesis.hook
    def filter_body(context, body) -> bool:
        words = body.get("vocabulary") if isinstance(body, dict) else None
        if not isinstance(words, list) or not all(isinstance(word, str) for word in words):
            return True
        names = [word.split(",")[0].strip().lower() for word in words]
        return len(set(names)) == len(names)


def register_form_wire_rule() -> None:
    """schemathesis hook: an ST201 ("schema-violating request accepted") on a multipart form is dropped when
    the form's parts, read back from the wire as text, make a schema-valid body. A form carries text only, so
    a one-class vocabulary sent as the string "sky" and the list ["sky"] are the same bytes, as are 0 and "0":
    the server cannot refuse one without refusing the other. Every other failure is kept."""
    import json

    import jsonschema
    import schemathesis

    from clipsam.serve.config import ServeConfig
    from clipsam.serve.openapi import request_schemas

    def read_back(text: str, schema: dict):
        kinds = schema.get("type")
        if kinds == "boolean" and text in ("true", "false"):
            return text == "true"
        if kinds in ("integer", "number"):
            try:
                number = json.loads(text)
            except ValueError:
                return text
            return number if isinstance(number, int | float) and not isinstance(number, bool) else text
        return text

    @schemathesis.hook
    def filter_failure(context, failure, case, response) -> bool:
        if (
            failure.code != "ST201"
            or case.media_type != "multipart/form-data"
            or not isinstance(case.body, dict)
        ):
            return True
        dense = case.path.endswith("/dense")
        schema = request_schemas(ServeConfig("artifacts"), dense=dense)["multipart/form-data"]["schema"]
        wire: dict = {}
        for name, value in case.body.items():
            items = value if isinstance(value, list) else [value]
            texts = [item if isinstance(item, str) else json.dumps(item) for item in items]
            if name == "image":
                wire[name] = "file"
            elif name == "vocabulary" or len(texts) != 1:
                wire[name] = texts
            else:
                wire[name] = read_back(texts[0], schema["properties"].get(name, {}))
        return not jsonschema.Draft202012Validator(schema).is_valid(wire)


@contextmanager
def two_node_cluster(num_cpus: int, object_store_mb: int, with_serve: bool = False) -> Iterator:
    """A two-node ray.cluster_utils.Cluster on 127.0.0.1 (loopback only), this process connected; shut down
    after (Serve first, with_serve)."""
    import ray
    from ray.cluster_utils import Cluster

    from clipsam.serve.runner import use_loopback_only

    use_loopback_only()  # both nodes, and everything they start, on 127.0.0.1
    node = {
        "num_cpus": num_cpus,
        "node_ip_address": "127.0.0.1",
        "object_store_memory": object_store_mb << 20,
    }
    nodes = Cluster(initialize_head=True, connect=True, head_node_args={**node, "include_dashboard": False})
    try:
        nodes.add_node(**node)
        nodes.wait_for_nodes(timeout=120)
        yield nodes
    finally:
        if with_serve:
            from ray import serve

            serve.shutdown()
        ray.shutdown()
        nodes.shutdown()
