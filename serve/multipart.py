"""A small multipart/form-data parser (RFC 7578) for request bodies held in memory; binary-safe."""

from __future__ import annotations

import re
from dataclasses import dataclass

_BOUNDARY = re.compile(r'boundary=(?:"([^"]+)"|([^;\s]+))', re.IGNORECASE)
_PARAM = re.compile(r';\s*([A-Za-z0-9_*-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;]*))')
MAX_PARTS = 1000


class MultipartError(ValueError):
    """The body is not well-formed multipart/form-data."""


@dataclass(frozen=True)
class FormPart:
    """One part: its form field `name`, the `filename` of a file part (else None), its raw bytes."""

    name: str
    filename: str | None
    data: bytes


def parse_multipart(content_type: str, body: bytes) -> list[FormPart]:
    """The parts of a multipart/form-data `body`, in order. Raises MultipartError when it is malformed."""
    match = _BOUNDARY.search(content_type)
    if match is None:
        raise MultipartError("the content type has no boundary")
    delimiter = b"--" + (match.group(1) or match.group(2)).encode("latin-1")
    chunks = body.split(delimiter)
    if len(chunks) < 3 or not chunks[-1].startswith(b"--"):
        raise MultipartError("no closing boundary")
    if len(chunks) - 2 > MAX_PARTS:
        raise MultipartError(f"more than {MAX_PARTS} parts")
    return [_part(chunk) for chunk in chunks[1:-1]]


def _part(chunk: bytes) -> FormPart:
    if not chunk.startswith(b"\r\n") or not chunk.endswith(b"\r\n"):
        raise MultipartError("a part is not framed by CRLF")
    head, separator, data = chunk[2:-2].partition(b"\r\n\r\n")
    if not separator:
        raise MultipartError("a part has no header block")
    headers = {}
    for line in head.decode("utf-8", "replace").split("\r\n"):
        key, colon, value = line.partition(":")
        if not colon:
            raise MultipartError(f"bad part header line {line!r}")
        headers[key.strip().lower()] = value.strip()
    disposition = headers.get("content-disposition", "")
    if not disposition.lower().startswith("form-data"):
        raise MultipartError("a part has no 'Content-Disposition: form-data' header")
    params = {
        key.lower(): quoted.replace('\\"', '"') if quoted else plain.strip()
        for key, quoted, plain in _PARAM.findall(disposition)
    }
    if "name" not in params:
        raise MultipartError("a part has no field name")
    return FormPart(params["name"], params.get("filename"), data)
