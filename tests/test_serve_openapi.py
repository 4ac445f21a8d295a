"""serve/openapi.py without a service: the document is valid OpenAPI 3.1, its option schemas are the parser's
table, and on a set of edge-case bodies the JSON schema and the parser agree (valid ⇔ accepted)."""

from __future__ import annotations

import base64
import io
import json

import jsonschema
import numpy as np
import pytest
from PIL import Image

from clipsam import SegmentOptions
from clipsam.serve.config import ServeConfig
from clipsam.serve.openapi import openapi_document, request_schemas
from clipsam.serve.requests import OPTIONS, RequestError, dense_format, parse_request, segment_options

CONFIG = ServeConfig("artifacts", max_pixels=10_000, max_body_bytes=1 << 20)


def png_base64() -> str:
    stream = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(stream, format="PNG")
    return base64.b64encode(stream.getvalue()).decode()


IMAGE = png_base64()
# (body, valid under the schema and accepted by the server)
BODIES = [
    ({"image": IMAGE, "vocabulary": ["sky"]}, True),
    ({"image": IMAGE, "vocabulary": ["sky, cloud", "car"], "file": "a.png", "max_prompts": None}, True),
    ({"image": IMAGE, "vocabulary": ["sky"], "min_confidence": 0, "min_region_size": 3.0}, True),
    ({"image": IMAGE, "vocabulary": ["sky"], "use_boxes": True, "iou_threshold": 1}, True),
    ({"image": IMAGE, "vocabulary": ["sky"], "edit": "remove"}, False),
    ({"image": "", "vocabulary": ["sky"]}, False),
    ({"image": IMAGE, "vocabulary": []}, False),
    ({"image": IMAGE, "vocabulary": "sky"}, False),
    ({"image": IMAGE, "vocabulary": ["sky", "sky"]}, False),
    ({"image": IMAGE, "vocabulary": ["  "]}, False),
    ({"image": IMAGE, "vocabulary": ["sky, "]}, False),
    ({"image": IMAGE, "vocabulary": ["sky"], "min_confidence": "0.5"}, False),
    ({"image": IMAGE, "vocabulary": ["sky"], "min_confidence": True}, False),
    ({"image": IMAGE, "vocabulary": ["sky"], "use_boxes": "yes"}, False),
    ({"image": IMAGE, "vocabulary": ["sky"], "min_region_size": 2.5}, False),
    ({"image": IMAGE, "vocabulary": ["sky"], "max_prompts": 0}, False),
    ({"image": IMAGE, "vocabulary": ["sky"], "min_region_size": 2**31}, False),
    ({"image": IMAGE, "vocabulary": ["sky"], "file": 3}, False),
    ({"vocabulary": ["sky"]}, False),
]


def accepted(body: dict) -> bool:
    try:
        parsed = parse_request("application/json", json.dumps(body).encode(), CONFIG.max_pixels)
        segment_options(parsed.fields, parsed.typed)
    except RequestError as err:
        assert err.status == 400 and "\n" not in err.message
        return False
    return True


def test_the_document_is_valid_openapi():
    from openapi_spec_validator import validate

    validate(openapi_document(CONFIG))


def test_option_schemas_are_the_parser_table_and_the_cli_defaults():
    properties = request_schemas(CONFIG, dense=False)["application/json"]["schema"]["properties"]
    defaults = SegmentOptions()
    for name, spec in OPTIONS.items():
        assert properties[name].get("default") == getattr(defaults, name) == spec.default
        assert properties[name].get("minimum") == spec.low and properties[name].get("maximum") == spec.high


@pytest.mark.parametrize("body, valid", BODIES)
def test_schema_and_parser_agree(body, valid):
    schema = request_schemas(CONFIG, dense=False)["application/json"]["schema"]
    assert jsonschema.Draft202012Validator(schema).is_valid(body) == valid
    assert accepted(body) == valid


def test_dense_format_is_exactly_the_enum():
    enum = request_schemas(CONFIG, dense=True)["application/json"]["schema"]["properties"]["format"]["enum"]
    assert [dense_format({"format": kind}) for kind in enum] == enum
    for bad in ("PNG", "jpg", 3):
        with pytest.raises(RequestError):
            dense_format({"format": bad})


# Multipart forms, each value on the wire as OpenAPI serializes a form field (and as schemathesis sends a
# mistyped one): a string as itself, anything else as its JSON text (True: "true", 0: "0", {}: "{}").
FORM_BODIES = [
    ({"vocabulary": ["sky"]}, True),
    ({"vocabulary": ["sky, cloud", "car"], "use_boxes": True, "max_prompts": 5}, True),
    ({"vocabulary": ["sky"], "use_boxes": False, "min_confidence": 0.5}, True),
    ({"vocabulary": [" {sky}"]}, True),
    ({"vocabulary": ["sky"], "use_boxes": 0}, False),
    ({"vocabulary": ["sky"], "use_boxes": "yes"}, False),
    ({"vocabulary": {}}, False),
    ({"vocabulary": ['["sky", "car"]']}, False),
    ({"vocabulary": ["{sky}"]}, False),
    ({"vocabulary": ["sky", "sky"]}, False),
    ({"vocabulary": ["sky"], "max_prompts": 0}, False),
    ({"vocabulary": ["sky"], "max_prompts": [1, 2]}, False),
]
BOUNDARY = "clipsam-form-boundary"


def form_body(fields: dict) -> bytes:
    def part(name: str, value) -> bytes:
        text = value if isinstance(value, str) else json.dumps(value)
        return f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{text}\r\n'.encode()

    image = base64.b64decode(IMAGE)
    body = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'.encode()
    body += b"Content-Type: image/png\r\n\r\n" + image + b"\r\n"
    for name, value in fields.items():
        for item in value if isinstance(value, list) else [value]:
            body += part(name, item)
    return body + f"--{BOUNDARY}--\r\n".encode()


@pytest.mark.parametrize("fields, valid", FORM_BODIES)
def test_form_schema_and_parser_agree(fields, valid):
    schema = request_schemas(CONFIG, dense=False)["multipart/form-data"]["schema"]
    assert jsonschema.Draft202012Validator(schema).is_valid({"image": "a.png", **fields}) == valid
    try:
        kind = f"multipart/form-data; boundary={BOUNDARY}"
        parsed = parse_request(kind, form_body(fields), CONFIG.max_pixels)
        segment_options(parsed.fields, parsed.typed)
    except RequestError as err:
        assert not valid and err.status == 400 and "\n" not in err.message
    else:
        assert valid
