"""A small Python client of `clipsam serve` (standard library only):

client = clipsam.Client("http://127.0.0.1:8000")
record = client.segment("street.jpg", ["sky", "car"], min_confidence=0.5)   # the segment --json record
"""

from __future__ import annotations

import base64
import io
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from clipsam.engine.errors import ClipsamError


class ServiceError(ClipsamError):
    """The service refused or failed a request: HTTP `status` and its one-line `message`."""

    def __init__(self, status: int, message: str):
        super().__init__(f"the service answered {status}: {message}")
        self.status = status
        self.message = message


class Client:
    """Requests to one service URL. A 503 (a stage restarting, the service draining) is retried up to
    `retries` times, `retry_wait_s` apart; with `retry_unreachable`, so are a refused or dropped connection
    (the port is closed while the service restarts) and Serve's own 404 (not clipsam's one-line JSON): its
    HTTP proxy listens before the application is deployed. Serve's own 500 (plain text, not clipsam's JSON)
    is retried as a 503: its proxy answers it when the replica a request was routed to stopped under it (a
    rolling update, a crash), before any clipsam code answered; clipsam's own 500 is a bug and is raised.
    The requests are pure functions of their body, so a repeat is safe."""

    def __init__(
        self,
        url: str,
        timeout_s: float = 300.0,
        retries: int = 3,
        retry_wait_s: float = 1.0,
        retry_unreachable: bool = False,
    ):
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.retries = retries
        self.retry_wait_s = retry_wait_s
        self.retry_unreachable = retry_unreachable

    def segment(self, image, vocabulary, *, file: str | None = None, **options) -> dict:
        """The `clipsam segment --json` record of `image` (a path, encoded image bytes, or uint8 [H, W, 3]
        RGB) for `vocabulary` (class names); options as the CLI's: min_confidence, min_region_size,
        iou_threshold, max_prompts, use_boxes."""
        body = request_body(image, vocabulary, file, options)
        status, _, data = self.request("POST", "/v1/segment", body)
        return json.loads(data)

    def segment_result(self, image, vocabulary, *, file: str | None = None, **options):
        """`segment` as a SegmentationResult (what `clipsam segment --server` renders and writes)."""
        return result_from_json(self.segment(image, vocabulary, file=file, **options))

    def dense(self, image, vocabulary, *, file: str | None = None) -> tuple[np.ndarray, list[str]]:
        """SCLIP's dense map: (pred int64 [H, W] class ids, class names)."""
        body = request_body(image, vocabulary, file, {"format": "npz"})
        _, _, data = self.request("POST", "/v1/dense", body)
        with np.load(io.BytesIO(data)) as arrays:
            return arrays["pred"], [str(name) for name in arrays["class_names"]]

    def ready(self) -> bool:
        """GET /readyz said ready."""
        try:
            _, _, data = self.request("GET", "/readyz", retry=False)
        except ServiceError:
            return False
        return bool(json.loads(data).get("ready"))

    def models(self) -> dict:
        return json.loads(self.request("GET", "/v1/models")[2])

    def request(self, method: str, path: str, body: dict | None = None, retry: bool = True):
        """(status, headers, body bytes) of one request; a JSON error answer raises ServiceError, and an
        unreachable service ClipsamError."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if body is not None else {}
        attempts = self.retries + 1 if retry else 1
        for attempt in range(attempts):
            request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    return response.status, dict(response.headers), response.read()
            except urllib.error.HTTPError as err:
                answer = err.read()  # not `data`: a retry sends the request's own body again
                error = ServiceError(err.code, _error_message(answer))
                ours = _is_service_error(answer)
                starting = err.code == 404 and self.retry_unreachable and not ours
                replica_lost = err.code == 500 and not ours
                if (err.code != 503 and not starting and not replica_lost) or attempt == attempts - 1:
                    raise error from None
            except (urllib.error.URLError, OSError) as err:
                reason = getattr(err, "reason", err)
                if not self.retry_unreachable or attempt == attempts - 1:
                    raise ClipsamError(f"cannot reach the service at {self.url}: {reason}") from None
            time.sleep(self.retry_wait_s)
        raise AssertionError("unreachable: the last attempt returns or raises")


def result_from_json(record: dict):
    """The SegmentationResult of a `clipsam segment --json` record (scores as the record rounds them)."""
    from clipsam import Segment, SegmentationResult

    segments = tuple(
        Segment(
            class_id=int(item["class_id"]),
            class_name=item["class_name"],
            score=float(item["score"]),
            bbox_xywh=tuple(float(v) for v in item["bbox"]),
            area=int(item["area"]),
            rle={"size": list(item["segmentation"]["size"]), "counts": item["segmentation"]["counts"]},
        )
        for item in record["segments"]
    )
    return SegmentationResult(
        height=int(record["image"]["height"]),
        width=int(record["image"]["width"]),
        class_names=tuple(record["class_names"]),
        segments=segments,
        random_weights=bool(record["random_weights"]),
        models=record["models"],
        timings_ms=record["timings_ms"],
        counts=record["counts"],
    )


def request_body(image, vocabulary, file: str | None = None, options: dict | None = None) -> dict:
    """The JSON body of /v1/segment and /v1/dense: base64 image, vocabulary list, file name, options."""
    encoded, name = _image_bytes(image)
    words = [vocabulary] if isinstance(vocabulary, str) else list(vocabulary)
    body = {"image": base64.b64encode(encoded).decode("ascii"), "vocabulary": words, **(options or {})}
    body["file"] = file if file is not None else name
    return body


def _image_bytes(image) -> tuple[bytes, str]:
    """(encoded image bytes, the name the result reports) of a path, bytes, or uint8 [H, W, 3] array."""
    if isinstance(image, bytes | bytearray):
        return bytes(image), "upload"
    if isinstance(image, np.ndarray):
        from PIL import Image

        stream = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(stream, format="PNG")
        return stream.getvalue(), "upload"
    path = Path(image)
    try:
        return path.read_bytes(), str(image)
    except OSError as err:
        raise ClipsamError(f"cannot read image '{path}': {err.strerror or err}") from None


def _is_service_error(data: bytes) -> bool:
    """Whether an error body is clipsam's own {"error": "…"} (not an answer of Serve's proxy)."""
    try:
        record = json.loads(data)
    except ValueError:
        return False
    return isinstance(record, dict) and list(record) == ["error"]


def _error_message(data: bytes) -> str:
    try:
        return str(json.loads(data)["error"])
    except (ValueError, KeyError, TypeError):
        return " ".join(data.decode("utf-8", "replace").split())[:300] or "no message"
