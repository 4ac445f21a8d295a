"""The service against its own OpenAPI document: openapi-spec-validator accepts it, it embeds
docs/segment-output.schema.json and the real error answers, and schemathesis (`--checks all`, real picture
files for the image fields, bounded in examples and time, loopback only) finds no failure. Then a redeploy
with a new config (what `serve deploy` does) under a retrying client loses no request."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from clipsam.client import Client
from clipsam.engine.bench.demo_scene import demo_scene
from tests.serve_helpers import http, small_config

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "docs" / "segment-output.schema.json"
EXAMPLES, MAX_TIME_S = 30, 150  # per operation; the whole schemathesis run
HOOKS = "from tests.serve_helpers import register_schemathesis_hooks\n\nregister_schemathesis_hooks()\n"


@pytest.fixture(scope="module")
def service(artifacts: Path):
    from clipsam.serve.runner import start_service

    running = start_service(small_config(artifacts, max_pixels=10**6, max_body_bytes=4 << 20), timeout_s=300)
    yield running
    running.stop()


def document(url: str) -> dict:
    status, _, body = http("GET", f"{url}/openapi.json")
    assert status == 200
    return json.loads(body)


def test_the_document_is_valid_and_says_what_the_server_does(service):
    from openapi_spec_validator import validate

    spec = document(service.url)
    validate(spec)
    segment = spec["paths"]["/v1/segment"]["post"]
    assert set(segment["responses"]) == {"200", "400", "413", "415", "503", "504"}
    body = segment["requestBody"]["content"]["application/json"]["schema"]
    assert body["additionalProperties"] is False and body["properties"]["vocabulary"]["minItems"] == 1
    assert body["properties"]["image"]["minLength"] == 1 and "1,000,000 pixels" in str(body)
    output = spec["components"]["schemas"]["SegmentOutput"]
    assert (
        output["properties"]
        == json.loads(SCHEMA.read_text().replace("#/$defs/", "#/components/schemas/SegmentOutput_"))[
            "properties"
        ]
    )
    status, headers, _ = http("GET", f"{service.url}/metrics")
    assert (
        status == 200
        and headers["Content-Type"] in spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    )
    status, headers, answer = http("DELETE", f"{service.url}/v1/segment")
    assert status == 405 and "POST" in headers["Allow"] and list(json.loads(answer)) == ["error"]


def test_schemathesis_finds_no_failure(service, tmp_path):
    (tmp_path / "clipsam_hooks.py").write_text(HOOKS)
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "clipsam_hooks",
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)]),
        "NO_COLOR": "1",
    }
    command = [sys.executable, "-m", "schemathesis.cli", "run", f"{service.url}/openapi.json"]
    command += ["--checks", "all", "-n", str(EXAMPLES), "--max-time", str(MAX_TIME_S), "--seed", "27"]
    command += ["--suppress-health-check", "all", "--request-timeout", "60", "--workers", "1"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=MAX_TIME_S + 120)
    report = done.stdout[-6000:] + done.stderr[-2000:]
    assert done.returncode == 0, report
    assert "No issues found" in done.stdout or " 0 failures" in done.stdout or "passed" in done.stdout, report


def test_redeploy_under_a_retrying_client_loses_no_request(service, tmp_path):
    """`serve.run` of a changed config replaces every replica (a rolling update) while one client sends
    requests one after another, retrying 503s and the proxy's plain 500: every request is answered."""
    from ray import serve

    from clipsam.serve.app import build_app

    path = tmp_path / "scene.png"
    Image.fromarray(demo_scene(48, 64, seed=5)).save(path)
    image = base64.b64encode(path.read_bytes()).decode()
    client = Client(service.url, retries=240, retry_wait_s=0.25)
    changed = replace(service.config, request_timeout_s=service.config.request_timeout_s + 1)
    finished = threading.Event()
    answers = []

    def redeploy() -> None:
        serve.run(build_app(changed), name=changed.app_name, route_prefix="/")
        finished.set()

    updater = threading.Thread(target=redeploy, daemon=True)
    updater.start()
    while not finished.is_set() and len(answers) < 400:  # bounded: the update ends first
        answers.append(client.segment(base64.b64decode(image), ["sky", "car"], min_confidence=0.0))
    updater.join(300)
    answers.append(client.segment(base64.b64decode(image), ["sky", "car"], min_confidence=0.0))
    assert finished.is_set() and len(answers) >= 2
    assert all(answer["counts"]["prompts"] > 0 for answer in answers)
    models = json.loads(http("GET", f"{service.url}/v1/models")[2])
    assert models["service"]["request_timeout_s"] == changed.request_timeout_s  # the new replicas answer
