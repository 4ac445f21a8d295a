"""The service's parts that need no Ray cluster: request parsing, multipart, the image cache, decoder
batching, the Serve config file, the bench record."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from urllib3.filepost import encode_multipart_formdata

from clipsam import Prompts, RleCandidates, SegmentOptions
from clipsam.engine.image_io import load_image
from clipsam.serve.batching import concat_prompts, group_keys, split_candidates
from clipsam.serve.cache import ByteLru, image_key
from clipsam.serve.config import ServeConfig, serve_config_record, write_serve_config
from clipsam.serve.multipart import MultipartError, parse_multipart
from clipsam.serve.requests import RequestError, decode_image, parse_request, segment_options


def png(image: np.ndarray, **save) -> bytes:
    stream = io.BytesIO()
    Image.fromarray(image).save(stream, format="PNG", **save)
    return stream.getvalue()


@pytest.fixture()
def picture() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (24, 32, 3), dtype=np.uint8)


class Sized:
    def __init__(self, nbytes: int):
        self.nbytes = nbytes


def test_lru_evicts_least_recently_used_within_the_byte_bound():
    cache = ByteLru(100)
    cache.put("a", Sized(40))
    cache.put("b", Sized(40))
    assert cache.get("a") is not None  # a is now the most recent; b goes first
    cache.put("c", Sized(40))
    assert cache.get("b") is None and cache.get("a") is not None and cache.get("c") is not None
    assert cache.nbytes == 80 and cache.stats()["evictions"] == 1
    cache.put("huge", Sized(101))  # larger than the whole bound: not kept, nothing evicted
    assert cache.get("huge") is None and len(cache) == 2
    cache.put("a", Sized(10))  # replacing a key counts its new size only
    assert cache.nbytes == 50
    assert cache.stats() == {
        "entries": 2,
        "bytes": 50,
        "max_bytes": 100,
        "hits": 3,
        "misses": 2,
        "evictions": 1,
    }


def test_lru_matches_a_list_model_on_a_random_sequence():
    rng = np.random.default_rng(0)
    cache, model = ByteLru(300), []  # model: [(key, size)] oldest first
    for _ in range(500):
        key = f"k{rng.integers(0, 12)}"
        if rng.random() < 0.5:
            size = int(rng.integers(1, 120))
            cache.put(key, Sized(size))
            model = [entry for entry in model if entry[0] != key] + [(key, size)]
            while sum(size for _, size in model) > 300:
                model.pop(0)
        else:
            found = cache.get(key)
            hit = [entry for entry in model if entry[0] == key]
            assert (found is not None) == bool(hit)
            if hit:
                model = [entry for entry in model if entry[0] != key] + hit
        assert cache.nbytes == sum(size for _, size in model) <= 300


def test_image_key_depends_on_pixels_and_shape(picture):
    assert image_key(picture) == image_key(picture.copy())
    changed = picture.copy()
    changed[0, 0, 0] ^= 1
    assert image_key(changed) != image_key(picture)
    assert image_key(picture.reshape(32, 24, 3)) != image_key(picture)


def test_multipart_parser_agrees_with_urllib3s_encoder(picture):
    image = png(picture)
    fields = [
        ("image", ("street.png", image, "image/png")),
        ("vocabulary", "sky"),
        ("vocabulary", "Stephen Curry"),
        ("vocabulary", "car, automobile"),
        ("min_confidence", "0.5"),
    ]
    body, content_type = encode_multipart_formdata(fields)
    parts = parse_multipart(content_type, body)
    assert [(p.name, p.filename) for p in parts] == [
        ("image", "street.png"),
        ("vocabulary", None),
        ("vocabulary", None),
        ("vocabulary", None),
        ("min_confidence", None),
    ]
    assert parts[0].data == image
    assert [p.data.decode() for p in parts[1:]] == ["sky", "Stephen Curry", "car, automobile", "0.5"]


@pytest.mark.parametrize(
    "content_type, body",
    [
        ("multipart/form-data", b"--x\r\n\r\n--x--"),
        ("multipart/form-data; boundary=x", b"no boundary here"),
        ("multipart/form-data; boundary=x", b"--x\r\nContent-Disposition: form-data\r\n\r\nv\r\n--x--\r\n"),
        ("multipart/form-data; boundary=x", b"--x\r\nContent-Type: text/plain\r\n\r\nv\r\n--x--\r\n"),
        ("multipart/form-data; boundary=x", b'--x\r\nContent-Disposition: form-data; name="a"\r\n--x--\r\n'),
    ],
)
def test_malformed_multipart_is_refused(content_type, body):
    with pytest.raises(MultipartError):
        parse_multipart(content_type, body)


def test_json_and_multipart_bodies_parse_to_the_same_request(picture, tmp_path):
    path = tmp_path / "pic.png"
    path.write_bytes(png(picture))
    words = ["sky", "car"]
    as_json = (
        json.dumps(
            {"image": base64.b64encode(path.read_bytes()).decode(), "vocabulary": words, "file": "pic.png"}
        ).encode()
        + b""
    )
    from_json = parse_request("application/json", as_json, 10**6)
    body, content_type = encode_multipart_formdata(
        [("image", ("pic.png", path.read_bytes())), *[("vocabulary", w) for w in words]]
    )
    from_form = parse_request(content_type, body, 10**6)
    for parsed in (from_json, from_form):
        np.testing.assert_array_equal(parsed.image, load_image(path))  # as `clipsam segment` reads the file
        assert parsed.vocabulary.class_names == ("sky", "car") and parsed.file == "pic.png"


def test_decode_applies_exif_orientation_as_the_cli_does(tmp_path):
    picture = np.zeros((10, 20, 3), np.uint8)
    picture[:, :5] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    path = tmp_path / "rotated.jpg"
    Image.fromarray(picture).save(path, format="JPEG", exif=exif, quality=95)
    decoded = decode_image(path.read_bytes(), 10**6)
    assert decoded.shape == (20, 10, 3)
    np.testing.assert_array_equal(decoded, load_image(path))


@pytest.mark.parametrize(
    "data, status, kind",
    [
        (b"", 400, "bad_image"),
        (b"definitely not an image", 400, "bad_image"),
        (png(np.zeros((8, 8, 3), np.uint8))[:40], 400, "bad_image"),  # truncated
        (png(np.zeros((100, 100, 3), np.uint8)), 413, "too_large"),
    ],
)
def test_bad_images_are_refused_with_their_status(data, status, kind):
    with pytest.raises(RequestError) as caught:
        decode_image(data, max_pixels=5000)
    assert (caught.value.status, caught.value.kind) == (status, kind)
    assert "\n" not in caught.value.message


@pytest.mark.parametrize(
    "body, status, kind, words",
    [
        (b"{not json", 400, "bad_request", "not valid JSON"),
        (b"[1, 2]", 400, "bad_request", "must be an object"),
        (b'{"vocabulary": ["sky"]}', 400, "bad_image", "'image'"),
        (b'{"image": "%%%", "vocabulary": ["sky"]}', 400, "bad_image", "base64"),
        (b'{"image": "", "vocabulary": ["sky"]}', 400, "bad_image", "empty"),
    ],
)
def test_bad_json_bodies(body, status, kind, words):
    with pytest.raises(RequestError) as caught:
        parse_request("application/json", body, 10**6)
    assert (caught.value.status, caught.value.kind) == (status, kind)
    assert words in caught.value.message


def test_vocabulary_and_field_errors_are_400s(picture):
    image = base64.b64encode(png(picture)).decode()
    cases = [
        ({"vocabulary": []}, "vocabulary", "empty"),
        ({"vocabulary": ["car", "car"]}, "vocabulary", "duplicate"),
        ({"vocabulary": [3]}, "vocabulary", "list of class names"),
        ({"vocabulary": ["sky"], "edit": "remove"}, "bad_request", "unknown field(s): edit"),
    ]
    for fields, kind, words in cases:
        with pytest.raises(RequestError) as caught:
            parse_request("application/json", json.dumps({"image": image, **fields}).encode(), 10**6)
        assert (caught.value.status, caught.value.kind) == (400, kind) and words in caught.value.message
    with pytest.raises(RequestError) as caught:
        parse_request("text/plain", b"x", 10**6)
    assert caught.value.status == 415


def test_options_follow_the_cli_ranges():
    given = {"min_confidence": "0.25", "min_region_size": 7, "iou_threshold": 0.5, "max_prompts": "3"}
    assert segment_options({**given, "use_boxes": "true"}) == SegmentOptions(0.25, 7, 0.5, 3, True)
    assert segment_options({}) == SegmentOptions()
    for bad in (
        {"min_confidence": 1.5},
        {"min_confidence": "nan"},
        {"min_region_size": -1},
        {"min_region_size": 2.5},
        {"max_prompts": 0},
        {"use_boxes": "maybe"},
        {"iou_threshold": True},
    ):
        with pytest.raises(RequestError) as caught:
            segment_options(bad)
        assert caught.value.status == 400 and next(iter(bad)) in caught.value.message


def _prompts(count: int, offset: int) -> Prompts:
    ids = np.arange(offset, offset + count)
    return Prompts(
        coords=np.stack([ids, ids], axis=-1)[:, None, :].astype(np.float32),
        labels=np.ones((count, 1), np.int32),
        class_ids=ids.astype(np.int32),
        scores=np.full(count, 0.5, np.float32),
        boxes=np.zeros((count, 4), np.float32),
        areas=np.full(count, 10, np.int64),
    )


def test_grouped_prompts_split_back_per_request():
    batch = [_prompts(2, 0), _prompts(3, 10), _prompts(1, 20)]
    groups = group_keys(["img-a", "img-b", "img-a"], [False, False, False], batch)
    assert groups == [[0, 2], [1]]
    merged = concat_prompts([batch[i] for i in groups[0]])
    assert merged.class_ids.tolist() == [0, 1, 20]
    candidates = RleCandidates(
        rles=[f"rle{c}" for c in merged.class_ids.tolist()],
        iou=merged.scores * 2,
        class_ids=merged.class_ids,
        scores=merged.scores,
    )
    first, third = split_candidates(candidates, [2, 1])
    assert first.rles == ["rle0", "rle1"] and third.rles == ["rle20"]
    assert first.class_ids.tolist() == [0, 1] and third.class_ids.tolist() == [20]
    assert group_keys(["a", "a"], [False, True], batch[:2]) == [[0], [1]]  # use_boxes differs: not shared


def test_serve_config_file_is_valid_for_serve_deploy_and_round_trips(tmp_path):
    from ray.serve.schema import ServeDeploySchema

    config = ServeConfig(str(tmp_path), port=8123).with_replicas(2)
    path = tmp_path / "serve.yaml"
    write_serve_config(config, path)
    record = yaml.safe_load(path.read_text())
    assert record == serve_config_record(config)
    schema = ServeDeploySchema.model_validate(record)
    application = schema.applications[0]
    assert application.import_path == "clipsam.serve.app:app_builder"
    assert {d.name: d.num_replicas for d in application.deployments} == {
        "Ingress": 1,
        "SclipStage": 2,
        "Sam2Encoder": 2,
        "Sam2Decoder": 2,
    }
    assert ServeConfig.from_args(application.args) == config
    with pytest.raises(ValueError, match="unknown service settings: nope"):
        ServeConfig.from_args({**application.args, "nope": 1})


def test_failures_map_to_statuses_with_one_line_messages():
    from ray.exceptions import ActorDiedError, RayTaskError
    from ray.serve.exceptions import BackPressureError

    from clipsam.engine.errors import ClipsamError
    from clipsam.serve.ingress import error_answer

    in_replica = ClipsamError("the artifacts hold no text features for 'zebra'")
    wrapped = RayTaskError("prompts", "Traceback (most recent call last):\n  ...", in_replica)
    bug = RayTaskError("decode", "Traceback ...\n", KeyError("coords")).as_instanceof_cause()
    cases = [
        (RequestError(413, "too_large", "the image has\n too many pixels"), ("too_large", 413)),
        (TimeoutError(), ("timeout", 504)),
        (ActorDiedError(), ("unavailable", 503)),
        (BackPressureError(num_queued_requests=3, max_queued_requests=2), ("unavailable", 503)),
        (wrapped.as_instanceof_cause(), ("vocabulary", 400)),
        (bug, ("internal", 500)),
    ]
    for err, expected in cases:
        kind, status, message, headers = error_answer(err, 2.5)
        assert (kind, status) == expected
        assert "\n" not in message and "Traceback" not in message
        assert (headers or {}).get("Retry-After") == ("1" if status == 503 else None)
    assert error_answer(wrapped.as_instanceof_cause(), 1)[2] == str(in_replica)
    assert error_answer(TimeoutError(), 2.5)[2] == "the request took more than 2.5 s"


def test_serve_command_errors_and_config_file(artifacts, tmp_path, capsys):
    from tests.cli_helpers import assert_one_line_error, run_cli

    code, _, err = run_cli(["serve"], capsys)  # the engine cache's models, and no checkpoint here
    assert_one_line_error(code, err, "no CLIP checkpoint at")
    assert "--random-weights" in err
    code, _, err = run_cli(["serve", "--artifacts", artifacts, "--random-weights"], capsys)
    assert_one_line_error(code, err, "--random-weights is for the engine cache")
    code, _, err = run_cli(["serve", "--artifacts", tmp_path / "missing"], capsys)
    assert_one_line_error(code, err, "does not exist")
    out = tmp_path / "serve.yaml"
    code, stdout, err = run_cli(
        ["serve", "--artifacts", artifacts, "--replicas", "3", "--config", out], capsys
    )
    assert code == 0, err
    record = yaml.safe_load(out.read_text())
    args = record["applications"][0]["args"]
    assert args["artifacts"] == str(Path(artifacts).resolve()) and args["decoder"]["num_replicas"] == 3
    assert record["http_options"] == {"host": "127.0.0.1", "port": 8000} and "serve deploy" in stdout
