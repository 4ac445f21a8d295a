"""The service's OpenAPI 3.1 document, built from the definitions the code enforces: the option table of
serve/requests.py (types, ranges, defaults), the vocabulary's rules, the service's limits (ServeConfig), the
one-line error body of serve/ingress.py, and docs/segment-output.schema.json for /v1/segment's answer.
tests/test_serve_contract.py runs schemathesis against a live service with this document."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from clipsam.serve.config import ServeConfig
from clipsam.serve.requests import DENSE_FORMATS, OPTIONS

SEGMENT_SCHEMA_PATH = Path(__file__).resolve().parents[1] / "docs" / "segment-output.schema.json"
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # Prometheus text exposition format 0.0.4
# One class per item: ", "-separated synonyms, none of them blank (engine/vocabulary.py).
CLASS_PATTERN = r"^[^,]*[^,\s][^,]*(,[^,]*[^,\s][^,]*)*$"
# The same in a multipart form, where an item may not begin with "[" or "{" (JSON sent as one part).
FORM_CLASS_PATTERN = r"^([^,\s\[{][^,]*|\s[^,]*[^,\s][^,]*)(,[^,]*[^,\s][^,]*)*$"
ERROR_STATUSES = {
    "400": "Bad input: malformed body, unknown field, bad option value, bad vocabulary, undecodable image.",
    "413": "The body is over the byte limit or the image over the pixel limit.",
    "415": "A content type other than application/json or multipart/form-data.",
    "503": "A stage is unavailable (a replica restarting) or the service is shutting down: retry.",
    "504": "The request took longer than the service's request timeout.",
}
SCHEMA_REF = "#/components/schemas/"


def option_schema(name: str, form: bool = False) -> dict:
    """The JSON Schema of one option of OPTIONS; a form field (form=True) has no null (leave it out)."""
    spec = OPTIONS[name]
    kind = {float: "number", int: "integer", bool: "boolean"}[spec.kind]
    nullable = spec.nullable and not form
    form_text = " In a form: the text 'true' or 'false'." if form and kind == "boolean" else ""
    description = spec.description + form_text
    schema: dict = {"type": [kind, "null"] if nullable else kind, "description": description}
    if spec.low is not None:
        schema["minimum"] = spec.low
    if spec.high is not None:
        schema["maximum"] = spec.high
    if spec.default is not None:
        schema["default"] = spec.default
    return schema


def request_schemas(config: ServeConfig, dense: bool) -> dict:
    """{media type: schema} of the request bodies of /v1/segment (dense False) or /v1/dense."""
    limit = (
        f"A PNG / JPEG / … file of at most {config.max_pixels:,} pixels (413 above); the whole body at most "
        f"{config.max_body_bytes:,} bytes (413 above)."
    )
    vocabulary = {
        "type": "array",
        "minItems": 1,
        "uniqueItems": True,
        "items": {"type": "string", "pattern": CLASS_PATTERN},
        "description": "Class names as --vocabulary: one class per item, ', '-separated synonyms; an item's "
        "first synonym is its class name, unique ignoring case and surrounding spaces (JSON Schema's "
        "uniqueItems cannot say so: a repeated name is a 400); an item 'background' becomes SCLIP's "
        "background class 0.",
    }
    form_vocabulary = {
        **vocabulary,
        "items": {"type": "string", "pattern": FORM_CLASS_PATTERN},
        "description": f"{vocabulary['description']} One form part per class; a part does not begin "
        "with '[' or '{'.",
    }
    options = {name: option_schema(name) for name in OPTIONS}
    form_options = {name: option_schema(name, form=True) for name in OPTIONS}
    if dense:
        options = form_options = {"format": {"type": "string", "enum": list(DENSE_FORMATS), "default": "png"}}
    image_json = {
        "type": "string",
        "format": "byte",
        "contentEncoding": "base64",
        "contentMediaType": "image/*",
        "minLength": 1,
        "maxLength": config.max_body_bytes,
        "description": f"base64 of the image file. {limit}",
    }
    image_form = {"type": "string", "format": "binary", "contentMediaType": "image/*", "description": limit}
    name = {"type": "string", "description": "the name the answer's image.file reports (default 'upload')"}
    json_properties = {"image": image_json, "vocabulary": vocabulary, "file": name, **options}
    form_properties = {"image": image_form, "vocabulary": form_vocabulary, **form_options}
    return {
        "application/json": {"schema": _object(json_properties)},
        "multipart/form-data": {
            "schema": _object(form_properties),
            "encoding": {"image": {"contentType": "image/*"}, "vocabulary": {"explode": True}},
        },
    }


def openapi_document(config: ServeConfig) -> dict:
    """The whole document for a service run with `config` (its limits appear in the descriptions)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "clipsam",
            "version": "1",
            "summary": "Open-vocabulary segmentation: SCLIP dense maps prompt SAM2.",
        },
        "paths": {
            "/v1/segment": {"post": _segment_operation(config)},
            "/v1/dense": {"post": _dense_operation(config)},
            "/healthz": {"get": _health_operation()},
            "/readyz": {"get": _ready_operation()},
            "/v1/models": {"get": _models_operation()},
            "/metrics": {"get": _metrics_operation()},
        },
        "components": {"schemas": {"Error": ERROR_SCHEMA, **segment_output_schemas()}},
    }


ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "additionalProperties": False,
    "properties": {"error": {"type": "string", "pattern": "^[^\\n]*$", "description": "one line"}},
}


@cache
def segment_output_schemas() -> dict:
    """docs/segment-output.schema.json as components: SegmentOutput and its $defs (refs rewritten)."""
    if not SEGMENT_SCHEMA_PATH.is_file():  # an install without the source tree: the shape only
        return {"SegmentOutput": {"type": "object", "description": "docs/segment-output.schema.json"}}
    text = SEGMENT_SCHEMA_PATH.read_text(encoding="utf-8")
    text = text.replace('"#/$defs/', f'"{SCHEMA_REF}SegmentOutput_')
    schema = json.loads(text)
    schema.pop("$schema", None)
    defs = schema.pop("$defs", {})
    return {"SegmentOutput": schema, **{f"SegmentOutput_{key}": value for key, value in defs.items()}}


def _object(properties: dict) -> dict:
    return {
        "type": "object",
        "required": ["image", "vocabulary"],
        "additionalProperties": False,
        "properties": properties,
    }


def _header(description: str, schema: dict | None = None, required: bool = True) -> dict:
    return {"description": description, "required": required, "schema": schema or {"type": "string"}}


def _errors(statuses: tuple[str, ...]) -> dict:
    answers = {}
    for status in statuses:
        answer = {
            "description": ERROR_STATUSES[status],
            "content": {"application/json": {"schema": {"$ref": SCHEMA_REF + "Error"}}},
        }
        if status == "503":
            answer["headers"] = {"Retry-After": _header("seconds to wait", {"type": "string"})}
        answers[status] = answer
    return answers


WALL = {"X-Clipsam-Wall-Ms": _header("milliseconds the ingress spent on the request")}
POST_ERRORS = ("400", "413", "415", "503", "504")


def _segment_operation(config: ServeConfig) -> dict:
    headers = {
        **WALL,
        "X-Clipsam-Cache": _header("image-cache use: sclip=hit|miss,sam2=hit|miss|skipped"),
        "X-Clipsam-Decoder": _header("node and replica of the decoder (with prompts)", None, False),
        "X-Clipsam-Batch-Requests": _header("requests in the decoder batch", None, False),
    }
    ok = {
        "description": "Exactly the JSON of `clipsam segment --json` (docs/segment-output.schema.json).",
        "headers": headers,
        "content": {"application/json": {"schema": {"$ref": SCHEMA_REF + "SegmentOutput"}}},
    }
    return {
        "summary": "Instances of the vocabulary's classes in one image",
        "operationId": "segment",
        "requestBody": {"required": True, "content": request_schemas(config, dense=False)},
        "responses": {"200": ok, **_errors(POST_ERRORS)},
    }


def _dense_operation(config: ServeConfig) -> dict:
    headers = {
        **WALL,
        "X-Clipsam-Class-Names": _header("JSON list of the class names (class id = index)"),
        "X-Clipsam-Random-Weights": _header("any random model", {"enum": ["true", "false"]}),
    }
    png = "8-bit grey PNG of class ids (16-bit above 256 classes), the image's size"
    npz = "npz: probs float32 [C, H, W], pred int64 [H, W], class_names, random_weights"
    ok = {
        "description": "SCLIP's dense map: format png (default) or npz",
        "headers": headers,
        "content": {
            "image/png": {"schema": {"type": "string", "contentMediaType": "image/png", "description": png}},
            "application/octet-stream": {"schema": {"type": "string", "description": npz}},
        },
    }
    return {
        "summary": "SCLIP's dense class map of one image",
        "operationId": "dense",
        "requestBody": {"required": True, "content": request_schemas(config, dense=True)},
        "responses": {"200": ok, **_errors(POST_ERRORS)},
    }


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _health_operation() -> dict:
    schema = {
        "type": "object",
        "required": ["status", "pid"],
        "properties": {"status": {"const": "alive"}, "pid": {"type": "integer"}},
    }
    return {"summary": "Liveness", "operationId": "healthz", "responses": {"200": _json(schema, "alive")}}


def _ready_operation() -> dict:
    ready = {
        "type": "object",
        "required": ["ready"],
        "properties": {
            "ready": {"type": "boolean"},
            "stages": {"type": "array", "items": {"type": "object"}},
        },
    }
    not_ready = {
        "type": "object",
        "required": ["ready", "error"],
        "properties": {"ready": {"const": False}, "error": {"type": "string"}},
    }
    responses = {
        "200": _json(ready, "every stage has a warm replica"),
        "503": _json(not_ready, "not ready: a stage has no replica yet, or the service is draining"),
    }
    return {"summary": "Readiness", "operationId": "readyz", "responses": responses}


def _models_operation() -> dict:
    schema = {
        "type": "object",
        "required": ["models", "random_weights", "service"],
        "properties": {
            "models": {"$ref": SCHEMA_REF + "SegmentOutput/properties/models"},
            "random_weights": {"type": "boolean"},
            "service": {"type": "object"},
        },
    }
    responses = {"200": _json(schema, "the models and the service's limits"), **_errors(("503", "504"))}
    return {"summary": "Models and limits", "operationId": "models", "responses": responses}


def _metrics_operation() -> dict:
    text = {METRICS_TYPE: {"schema": {"type": "string"}}}
    ok = {"description": "Prometheus text exposition format 0.0.4", "content": text}
    return {"summary": "Prometheus metrics", "operationId": "metrics", "responses": {"200": ok}}
