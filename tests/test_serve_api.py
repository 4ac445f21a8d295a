"""The service on tiny models (the session's artifacts: tiny CLIP + seeded random SAM2.1 tiny), started once
for this module on a local Ray instance at 127.0.0.1 and shut down at the end."""

from __future__ import annotations

import base64
import io
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from urllib3.filepost import encode_multipart_formdata

from clipsam.client import Client, ServiceError
from clipsam.engine.bench.demo_scene import demo_scene
from clipsam.engine.errors import ClipsamError
from tests.cli_helpers import run_cli
from tests.serve_helpers import free_port, http, post_json, small_config, without_timings

MAX_PIXELS, MAX_BODY = 1_000_000, 4 << 20
# (size, seed, vocabulary, CLI option flags, the same options as request fields)
CASES = [
    ((96, 128), 0, ["sky", "car", "road"], ["--min-confidence", "0"], {"min_confidence": 0.0}),
    (
        (120, 100),
        1,
        ["background", "car", "road"],
        ["--min-confidence", "0", "--min-region-size", "10", "--use-boxes", "--max-prompts", "5"],
        {"min_confidence": 0.0, "min_region_size": 10, "use_boxes": True, "max_prompts": 5},
    ),
    (
        (80, 160),
        2,
        ["grass", "road"],
        ["--min-confidence", "0", "--min-region-size", "20"],
        {"min_confidence": 0.0, "min_region_size": 20},
    ),
    ((96, 128), 0, ["sky", "car"], ["--min-confidence", "1"], {"min_confidence": 1.0}),  # no prompts
]


@pytest.fixture(scope="module")
def service(artifacts: Path):
    from clipsam.serve.runner import start_service

    config = small_config(artifacts, max_pixels=MAX_PIXELS, max_body_bytes=MAX_BODY)
    running = start_service(config, timeout_s=300)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("serve-images")
    paths = []
    for index, ((height, width), seed, *_rest) in enumerate(CASES):
        path = folder / f"scene{index}.png"
        Image.fromarray(demo_scene(height, width, seed=seed)).save(path)
        paths.append(path)
    return paths


def image_body(path: Path, words: list[str], **fields) -> dict:
    return {"image": base64.b64encode(path.read_bytes()).decode(), "vocabulary": words, **fields}


def test_health_and_readiness(service):
    status, _, body = http("GET", f"{service.url}/healthz")
    assert status == 200 and json.loads(body)["status"] == "alive"
    status, _, body = http("GET", f"{service.url}/readyz")
    record = json.loads(body)
    assert status == 200 and record["ready"] is True
    assert sorted(stage["stage"] for stage in record["stages"]) == ["decoder", "encoder", "sclip"]
    assert all(stage["warm"] and stage["node"] for stage in record["stages"])


def test_segment_json_equals_the_cli_json_on_four_images(service, images, artifacts, tmp_path, capsys):
    for path, (_, _, words, flags, fields) in zip(images, CASES, strict=True):
        out = tmp_path / f"{path.stem}.json"
        args = ["segment", "--artifacts", artifacts, "--image", path, "--vocabulary", *words, *flags]
        code, _, err = run_cli([*args, "--json", out, "--output", tmp_path / f"{path.stem}.png"], capsys)
        assert code == 0, err
        expected = json.loads(out.read_text())
        status, headers, body = post_json(
            f"{service.url}/v1/segment", image_body(path, words, file=str(path), **fields)
        )
        assert status == 200, body
        answer = json.loads(body)
        # timings_ms: the same stages, measured elsewhere; everything else identical.
        assert without_timings(answer) == without_timings(expected)
        assert set(answer["timings_ms"]) == set(expected["timings_ms"])
        assert answer["random_weights"] is True
        assert (answer["counts"]["prompts"] > 0) == (fields["min_confidence"] < 1)  # the last case has none
        if fields.get("max_prompts"):
            assert answer["counts"]["prompts"] <= fields["max_prompts"]


def test_multipart_body_gives_the_same_answer(service, images):
    words = ["sky", "car", "road"]
    parts = [("image", (str(images[0]), images[0].read_bytes(), "image/png"))]
    parts += [("vocabulary", word) for word in words] + [("min_confidence", "0")]
    body, content_type = encode_multipart_formdata(parts)
    status, _, answer = http("POST", f"{service.url}/v1/segment", body, content_type)
    assert status == 200, answer
    status, _, expected = post_json(
        f"{service.url}/v1/segment", image_body(images[0], words, file=str(images[0]), min_confidence=0)
    )
    assert without_timings(json.loads(answer)) == without_timings(json.loads(expected))


def test_same_image_new_vocabulary_reuses_both_encoder_outputs(service, images):
    path = images[2]
    first = post_json(f"{service.url}/v1/segment", image_body(path, ["sky", "tree"], min_confidence=0))
    second = post_json(f"{service.url}/v1/segment", image_body(path, ["road", "car"], min_confidence=0))
    assert first[0] == second[0] == 200
    assert json.loads(second[2])["counts"]["prompts"] > 0
    assert second[1]["X-Clipsam-Cache"] == "sclip=hit,sam2=hit"


def test_eight_concurrent_requests_equal_their_sequential_answers(service, images):
    vocabularies = [["sky", "car"], ["road", "tree"], ["grass", "car", "sky"], ["tree", "road"]]
    requests = [
        image_body(images[i % 2], vocabularies[i % 4], file=f"r{i}", min_confidence=0) for i in range(8)
    ]
    sequential = [post_json(f"{service.url}/v1/segment", body) for body in requests]
    with ThreadPoolExecutor(8) as pool:
        concurrent = list(pool.map(lambda body: post_json(f"{service.url}/v1/segment", body), requests))
    for (status_a, _, alone), (status_b, _, together) in zip(sequential, concurrent, strict=True):
        assert status_a == status_b == 200
        assert without_timings(json.loads(alone)) == without_timings(json.loads(together))


@pytest.mark.parametrize(
    "body, content_type, status, fragment",
    [
        (b"{broken", "application/json", 400, "not valid JSON"),
        (b'{"vocabulary": ["sky"]}', "application/json", 400, "'image'"),
        (
            json.dumps({"image": base64.b64encode(b"nope").decode(), "vocabulary": ["sky"]}).encode(),
            "application/json",
            400,
            "not a picture",
        ),
        (b"x", "text/plain", 415, "unsupported content type"),
    ],
)
def test_bad_requests_get_one_line_json_errors(service, body, content_type, status, fragment):
    answer_status, _, answer = http("POST", f"{service.url}/v1/segment", body, content_type)
    assert answer_status == status
    record = json.loads(answer)
    assert list(record) == ["error"] and fragment in record["error"] and "\n" not in record["error"]
    assert "Traceback" not in record["error"]


def test_vocabulary_errors_and_limits(service, images):
    cases = [
        (image_body(images[0], ["car", "car"]), 400, "duplicate"),
        (image_body(images[0], []), 400, "empty"),
        (image_body(images[0], ["sky"], min_confidence=2), 400, "min_confidence"),
    ]
    big = io.BytesIO()
    Image.fromarray(np.zeros((1100, 1000, 3), np.uint8)).save(big, format="PNG")  # over MAX_PIXELS
    cases.append(({"image": base64.b64encode(big.getvalue()).decode(), "vocabulary": ["sky"]}, 413, "pixels"))
    cases.append(({"image": "A" * (MAX_BODY + 4), "vocabulary": ["sky"]}, 413, "body"))
    for body, status, fragment in cases:
        answer_status, _, answer = post_json(f"{service.url}/v1/segment", body)
        assert answer_status == status and fragment in json.loads(answer)["error"], answer
    with pytest.raises(ServiceError) as caught:
        Client(service.url).segment(b"\x89PNG\r\n\x1a\n", ["sky"])  # a PNG signature, nothing after
    assert caught.value.status == 400
    assert json.loads(http("GET", f"{service.url}/readyz")[2])["ready"] is True


def test_client_and_dense_endpoint(service, images, artifacts):
    from clipsam import load_pipeline, vocabulary_from_words

    client = Client(service.url)
    assert client.ready()
    record = client.segment(images[0], ["sky", "car", "road"], min_confidence=0.0)
    assert record["image"]["file"] == str(images[0]) and record["counts"]["prompts"] > 0
    pred, names = client.dense(images[1], ["background", "car", "tree"])
    pipeline = load_pipeline(artifacts=str(artifacts))
    picture = np.asarray(Image.open(images[1]).convert("RGB"))
    expected = pipeline.dense(picture, vocabulary_from_words(["background", "car", "tree"]), None)
    np.testing.assert_array_equal(pred, expected.pred)
    assert names == list(expected.class_names)
    status, headers, png = post_json(f"{service.url}/v1/dense", image_body(images[1], ["car", "tree"]))
    assert status == 200 and headers["Content-Type"] == "image/png"
    assert json.loads(headers["X-Clipsam-Class-Names"]) == ["car", "tree"]
    assert np.asarray(Image.open(io.BytesIO(png))).shape == picture.shape[:2]
    with pytest.raises(ClipsamError, match="cannot reach"):
        Client(f"http://127.0.0.1:{free_port()}", retries=0).segment(images[0], ["sky"])


def test_models_docs_and_metrics(service, images):
    models = json.loads(http("GET", f"{service.url}/v1/models")[2])
    assert models["random_weights"] is True and models["models"]["sam2"]["name"] == "sam2.1-hiera-tiny"
    openapi = json.loads(http("GET", f"{service.url}/openapi.json")[2])
    content = openapi["paths"]["/v1/segment"]["post"]["requestBody"]["content"]
    assert set(content) == {"application/json", "multipart/form-data"}
    http("POST", f"{service.url}/v1/segment", b"{broken", "application/json")
    post_json(f"{service.url}/v1/segment", image_body(images[0], ["sky", "car"], min_confidence=0))
    status, headers, text = http("GET", f"{service.url}/metrics")
    text = text.decode()
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    assert 'clipsam_request_seconds_bucket{endpoint="segment",le="+Inf",status="200"}' in text
    assert 'clipsam_errors_total{kind="bad_request"}' in text
    assert 'clipsam_stage_seconds_count{stage="sam2_decoder"}' in text
    assert "clipsam_prompts_per_request_count" in text and "clipsam_requests_in_flight" in text


def test_segment_command_with_server_writes_the_service_answer(service, images, tmp_path, capsys):
    out, picture = tmp_path / "served.json", tmp_path / "served.png"
    args = ["segment", "--server", service.url, "--image", images[0], "-V", "sky", "car", "road"]
    code, _, err = run_cli([*args, "--min-confidence", "0", "--json", out, "--output", picture], capsys)
    assert code == 0, err
    status, _, answer = post_json(
        f"{service.url}/v1/segment",
        image_body(images[0], ["sky", "car", "road"], file=str(images[0])) | {"min_confidence": 0.0},
    )
    assert status == 200
    assert without_timings(json.loads(out.read_text())) == without_timings(json.loads(answer))
    assert Image.open(picture).size == Image.open(images[0]).size


def test_bench_server_records_and_gates(service, tmp_path, capsys):
    record_path = tmp_path / "load.json"
    args = ["bench", "--server", service.url, "--concurrency", "2", "--requests", "2", "--size", "64x80"]
    code, out, err = run_cli([*args, "--json", record_path], capsys)
    assert code == 0, err
    record = json.loads(record_path.read_text())
    assert record["config"]["stage"] == "server" and record["ours"]["statuses"] == {"200": 2}
    assert {"request", "sam2_encoder", "sam2_decoder"} <= set(record["ours"]["stages"]) and "p99" in out
    for factor, expected_code in ((1000.0, 0), (1 / 1000.0, 1)):  # a far slower / far faster baseline
        baseline = json.loads(record_path.read_text())
        for row in baseline["ours"]["stages"].values():
            row["p50"] *= factor
        path = tmp_path / f"baseline-{factor}.json"
        path.write_text(json.dumps(baseline))
        code, _, err = run_cli([*args, "--baseline", path], capsys)
        assert code == expected_code, err
