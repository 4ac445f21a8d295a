"""The HTTP ingress: FastAPI routes on a Ray Serve deployment that parse requests, call the stage
deployments and write the same JSON as `clipsam segment --json`.

Status codes: 400 bad input (one-line JSON {"error": …}), 413 body or image too large, 415 other content
types, 503 a stage unavailable (a replica died or is restarting) or the service draining (retry), 504 request
timeout. /openapi.json is built by serve/openapi.py from the same definitions the parser enforces.
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations (Request) at runtime.
import asyncio
import io
import json
import os
import time

import numpy as np
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from ray import serve
from ray.exceptions import ActorUnavailableError, RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError
from starlette.exceptions import HTTPException

from clipsam.engine.errors import ClipsamError
from clipsam.serve.cache import image_key
from clipsam.serve.config import ServeConfig
from clipsam.serve.metrics import CONTENT_TYPE, ServiceMetrics
from clipsam.serve.openapi import openapi_document
from clipsam.serve.requests import RequestError, dense_format, parse_request, segment_options

UNAVAILABLE = (RayActorError, ActorUnavailableError, DeploymentUnavailableError, ReplicaUnavailableError)
READY_TIMEOUT_S = 10.0
TIMING_ORDER = ("text", "sclip", "prompts", "sam2_encoder", "sam2_decoder", "merge")

DRAINING = "the service is shutting down: retry"
api = FastAPI(title="clipsam", version="1", openapi_url=None, docs_url=None, redoc_url=None)


def error_response(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status, headers=headers)


@api.exception_handler(HTTPException)
async def http_error(_request: Request, err: HTTPException) -> JSONResponse:
    """Starlette's own answers (404 unknown path, 405 with its Allow header) as one-line JSON errors too."""
    return error_response(err.status_code, str(err.detail), dict(err.headers or {}))


def user_message(err: BaseException) -> str:
    """The user-facing message of an error raised in a stage replica (without Ray's traceback)."""
    cause = err.cause if isinstance(err, RayTaskError) and err.cause is not None else err
    return str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__


def error_answer(err: Exception, timeout_s: float) -> tuple[str, int, str, dict | None]:
    """(metrics kind, HTTP status, one-line message, extra headers) of a failed request."""
    if isinstance(err, RequestError):
        return err.kind, err.status, err.message, {"Retry-After": "1"} if err.status == 503 else None
    if isinstance(err, TimeoutError):
        return "timeout", 504, f"the request took more than {timeout_s:g} s", None
    if isinstance(err, (*UNAVAILABLE, BackPressureError)):
        return "unavailable", 503, f"a stage is unavailable, retry: {user_message(err)}", {"Retry-After": "1"}
    if isinstance(err, ClipsamError):
        return "vocabulary", 400, user_message(err), None
    return "internal", 500, f"internal error: {type(err).__name__}: {user_message(err)}", None


def replica_id() -> str:
    context = serve.get_replica_context()
    return context.replica_tag if hasattr(context, "replica_tag") else str(context.replica_id)


def _cache_header(sclip_hit: bool | None, encoder_hit: bool | None) -> str:
    """Which encoder outputs came from the image cache: "sclip=hit|miss,sam2=hit|miss|skipped"."""
    sam2 = "skipped" if encoder_hit is None else ("hit" if encoder_hit else "miss")
    return f"sclip={'hit' if sclip_hit else 'miss'},sam2={sam2}"


def _class_png(pred: np.ndarray, classes: int) -> bytes:
    """int [H, W] class ids → PNG bytes: 8-bit grey for up to 256 classes, else 16-bit."""
    from PIL import Image

    picture = pred.astype(np.uint8) if classes <= 256 else pred.astype(np.uint16)
    stream = io.BytesIO()
    Image.fromarray(picture).save(stream, format="PNG")
    return stream.getvalue()


def _npz_bytes(dense, random_weights: bool) -> bytes:
    """The .npz of `clipsam dense`: probs float32 [C, H, W], pred int64 [H, W], class_names,
    random_weights."""
    stream = io.BytesIO()
    np.savez_compressed(
        stream,
        probs=dense.probs.astype(np.float32),
        pred=dense.pred.astype(np.int64),
        class_names=np.array(dense.class_names),
        random_weights=np.array(random_weights),
    )
    return stream.getvalue()


# Serve pickles the class when it is decorated: every module-level name it uses is defined above.
@serve.deployment(name="Ingress")
@serve.ingress(api)
class Ingress:
    """Routes: POST /v1/segment, POST /v1/dense, GET /healthz, /readyz, /v1/models, /metrics (+ /docs)."""

    def __init__(self, config: ServeConfig, sclip, encoder, decoder):
        self.config = config
        self.sclip, self.encoder, self.decoder = sclip, encoder, decoder
        self.metrics = ServiceMetrics()
        self._models: dict | None = None
        self.draining = False

    @api.get("/healthz")
    def healthz(self) -> dict:
        """Alive (the process answers; its pid, for memory checks); says nothing about the models."""
        return {"status": "alive", "pid": os.getpid()}

    @api.get("/openapi.json", include_in_schema=False)
    def openapi(self) -> JSONResponse:
        return JSONResponse(openapi_document(self.config))

    @api.get("/docs", include_in_schema=False)
    def docs(self) -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="clipsam")

    def drain(self) -> dict:
        """Stop accepting (readiness false, new requests 503) and say how many requests are in flight."""
        self.draining = True
        return {"replica": replica_id(), "in_flight": self.in_flight()}

    def in_flight(self) -> int:
        return int(self.metrics.in_flight._value.get())

    @api.get("/readyz")
    async def readyz(self) -> JSONResponse:
        """Ready: every stage has a replica whose models are loaded, graphs ran once, kernels compiled."""
        if self.draining:
            return JSONResponse({"ready": False, "error": DRAINING}, status_code=503)
        calls = [stage.ready.remote() for stage in (self.sclip, self.encoder, self.decoder)]
        try:
            stages = await asyncio.wait_for(asyncio.gather(*calls), READY_TIMEOUT_S)
        except (TimeoutError, *UNAVAILABLE, BackPressureError) as err:
            return JSONResponse({"ready": False, "error": user_message(err)}, status_code=503)
        return JSONResponse({"ready": all(stage["warm"] for stage in stages), "stages": stages})

    @api.get("/v1/models")
    async def models(self) -> Response:
        """The segment JSON's "models" record, random_weights, and the service's limits and deployments."""
        try:
            record = await asyncio.wait_for(self._model_record(), self.config.request_timeout_s)
        except Exception as err:  # a stage replica gone or slow: the one-line error answer
            _, status, message, headers = error_answer(err, self.config.request_timeout_s)
            return error_response(status, message, headers)
        settings = {
            "max_pixels": self.config.max_pixels,
            "max_body_bytes": self.config.max_body_bytes,
            "request_timeout_s": self.config.request_timeout_s,
            "cache_bytes_per_replica": self.config.cache_bytes,
        }
        return JSONResponse({**record, "service": settings})

    @api.get("/metrics")
    def metrics(self) -> Response:
        """Prometheus text format."""
        return Response(self.metrics.text(), media_type=CONTENT_TYPE)

    @api.post("/v1/segment")
    async def segment(self, request: Request) -> Response:
        """Instances of the vocabulary's classes: exactly the JSON of `clipsam segment --json`."""
        return await self._guarded("segment", request, self._segment)

    @api.post("/v1/dense")
    async def dense(self, request: Request) -> Response:
        """SCLIP's dense map: PNG of class ids (names in the X-Clipsam-Class-Names header) or npz."""
        return await self._guarded("dense", request, self._dense)

    async def _guarded(self, endpoint: str, request: Request, handler) -> Response:
        """Run `handler` under the timeout; every failure becomes a one-line JSON error with its status."""
        start = time.perf_counter()
        self.metrics.in_flight.inc()
        try:
            if self.draining:
                raise RequestError(503, "unavailable", DRAINING)
            body = await self._body(request)
            response = await asyncio.wait_for(handler(request, body), self.config.request_timeout_s)
        except Exception as err:  # the edge of the service: whatever escaped, one line, no traceback
            kind, status, message, headers = error_answer(err, self.config.request_timeout_s)
            self.metrics.errors.labels(kind).inc()
            response = error_response(status, message, headers)
        finally:
            self.metrics.in_flight.dec()
        elapsed = time.perf_counter() - start
        self.metrics.request_seconds.labels(endpoint, str(response.status_code)).observe(elapsed)
        response.headers["X-Clipsam-Wall-Ms"] = f"{elapsed * 1000.0:.1f}"
        return response

    async def _body(self, request: Request) -> bytes:
        """The request body, refused with 413 past max_body_bytes (by its declared length, then as read)."""
        limit = self.config.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise RequestError(413, "too_large", f"the request body is over the limit of {limit:,} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestError(413, "too_large", f"the request body is over the limit of {limit:,} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def _parsed(self, request: Request, body: bytes, extra: tuple = ()):
        content_type = request.headers.get("content-type", "")
        return await asyncio.to_thread(parse_request, content_type, body, self.config.max_pixels, extra)

    async def _model_record(self) -> dict:
        if self._models is None:
            self._models = await self.sclip.models.remote()
        return self._models

    async def _segment(self, request: Request, body: bytes) -> Response:
        from clipsam import SegmentationResult
        from clipsam.engine.outputs import result_to_json

        parsed = await self._parsed(request, body)
        options = segment_options(parsed.fields, parsed.typed)
        key = await asyncio.to_thread(image_key, parsed.image)
        embedding = self.encoder.embed.remote(key, parsed.image) if self.config.overlap_encoders else None
        found = await self.sclip.prompts.remote(key, parsed.image, parsed.vocabulary, options)
        timings, segments, headers, encoder_hit = dict(found.timings_ms), (), {}, None
        self.metrics.observe_cache("sclip", found.cache_hit)
        if len(found.value):
            embedding = embedding or self.encoder.embed.remote(key, parsed.image)
            names = parsed.vocabulary.class_names
            masks = await self.decoder.segment.remote(embedding, found.value, options, names, key)
            segments = masks.value
            timings.update(masks.timings_ms)
            encoder_hit = masks.cache_hit
            self.metrics.observe_cache("encoder", encoder_hit)
            headers["X-Clipsam-Decoder"] = f"{masks.where['node']} {masks.where['replica']}"
            headers["X-Clipsam-Batch-Requests"] = str(masks.where["batch_requests"])
        headers["X-Clipsam-Cache"] = _cache_header(found.cache_hit, encoder_hit)
        timings = {stage: timings.get(stage, 0.0) for stage in TIMING_ORDER}  # skipped: 0, as the CLI
        self.metrics.observe_stages(timings)
        self.metrics.prompts.observe(len(found.value))
        record = await self._model_record()
        height, width = parsed.image.shape[:2]
        result = SegmentationResult(
            height=height,
            width=width,
            class_names=parsed.vocabulary.class_names,
            segments=tuple(segments),
            random_weights=record["random_weights"],
            models=record["models"],
            timings_ms={**timings, "total": sum(timings.values())},
            counts={"prompts": len(found.value), "segments": len(segments)},
        )
        return JSONResponse(result_to_json(result, parsed.file), headers=headers)

    async def _dense(self, request: Request, body: bytes) -> Response:
        parsed = await self._parsed(request, body, ("format",))
        kind = dense_format(parsed.fields)
        key = await asyncio.to_thread(image_key, parsed.image)
        reply = await self.sclip.dense.remote(key, parsed.image, parsed.vocabulary)
        self.metrics.observe_cache("sclip", reply.cache_hit)
        self.metrics.observe_stages(reply.timings_ms)
        record = await self._model_record()
        names = list(reply.value.class_names)
        headers = {
            "X-Clipsam-Class-Names": json.dumps(names, ensure_ascii=True),
            "X-Clipsam-Random-Weights": json.dumps(record["random_weights"]),
        }
        if kind == "npz":
            data = await asyncio.to_thread(_npz_bytes, reply.value, record["random_weights"])
            return Response(data, media_type="application/octet-stream", headers=headers)
        data = await asyncio.to_thread(_class_png, reply.value.pred, len(names))
        return Response(data, media_type="image/png", headers=headers)
