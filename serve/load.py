"""`clipsam bench --server URL`: a load run against a running service, recorded like the other bench stages
(p50 / p90 / p99 per stage, requests/s, prompts/s, errors) and gated against a stored record."""

from __future__ import annotations

import io
import json
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from clipsam.client import Client, ServiceError, request_body
from clipsam.engine.errors import ClipsamError

STAGE = "server"
TIMED_STAGES = ("text", "sclip", "prompts", "sam2_encoder", "sam2_decoder", "merge")


@dataclass
class LoadRun:
    """What a load run saw. samples: per answered request, {"request": client wall ms, <server stage ms>,
    "num_prompts"}; statuses: final HTTP status per request (0: no answer); retried: 503s retried."""

    samples: list = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    retried: int = 0
    errors: Counter = field(default_factory=Counter)
    wall_s: float = 0.0


def png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    stream = io.BytesIO()
    Image.fromarray(image).save(stream, format="PNG")
    return stream.getvalue()


def run_load(
    url: str, images: list[bytes], vocabulary: list[str], concurrency: int, requests: int, options: dict
) -> LoadRun:
    """`requests` POST /v1/segment requests, `concurrency` at a time, images used in turn; a 503 is retried
    (at most 5 times, 0.5 s apart) and counted in `retried`."""
    run, lock = LoadRun(), threading.Lock()
    client = Client(url, retries=0)

    def one(index: int) -> None:
        body = request_body(images[index % len(images)], vocabulary, f"image{index % len(images)}", options)
        start = time.perf_counter()
        status, sample, message = _post(client, body, run, lock)
        with lock:
            run.statuses[status] += 1
            if sample is not None:
                run.samples.append({"request": (time.perf_counter() - start) * 1000.0, **sample})
            else:
                run.errors[message] += 1

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(requests)))
    run.wall_s = time.perf_counter() - start
    return run


def _post(client: Client, body: dict, run: LoadRun, lock: threading.Lock) -> tuple[int, dict | None, str]:
    for attempt in range(6):
        try:
            _, _, data = client.request("POST", "/v1/segment", body, retry=False)
        except ServiceError as err:
            if err.status != 503 or attempt == 5:
                return err.status, None, f"{err.status}: {err.message}"
            with lock:
                run.retried += 1
            time.sleep(0.5)
            continue
        except ClipsamError as err:
            return 0, None, str(err)
        record = json.loads(data)
        timings = {stage: record["timings_ms"].get(stage, 0.0) for stage in TIMED_STAGES}
        return 200, {**timings, "num_prompts": record["counts"]["prompts"]}, ""
    raise AssertionError("unreachable: the last attempt returns")


def server_record(run: LoadRun, url: str, models: dict, concurrency: int, images: str) -> dict:
    """The bench record (engine/bench/record.py's schema, stage "server"): "request" is the client's wall
    time per request, the other stages the server's own timings."""
    from clipsam.engine.bench import record as records

    ours = {
        "backend": models["models"].get("backend", "?"),
        "precision": models["models"].get("precision", "fp32"),
        "decoder": models["models"].get("decoder", "?"),
        "providers": list(models["models"].get("providers", [])),
        "models": models["models"],
        "random_weights": bool(models["random_weights"]),
        "stages": records.stage_stats(run.samples) if run.samples else {},
        "requests_per_s": len(run.samples) / run.wall_s if run.wall_s > 0 else 0.0,
        "prompts_per_s": sum(s["num_prompts"] for s in run.samples) / run.wall_s if run.wall_s > 0 else 0.0,
        "num_prompts": float(np.mean([s["num_prompts"] for s in run.samples])) if run.samples else 0.0,
        "statuses": {str(code): count for code, count in sorted(run.statuses.items())},
        "retried_503": run.retried,
        "errors": dict(run.errors),
        "wall_s": run.wall_s,
        "samples_ms": run.samples,
    }
    ours["images_per_s"] = ours["requests_per_s"]
    return {
        "schema": records.SCHEMA,
        "schema_version": records.SCHEMA_VERSION,
        "created_unix": int(time.time()),
        "config": {
            "stage": STAGE,
            "url": url,
            "concurrency": concurrency,
            "requests": sum(run.statuses.values()),
            "images": images,
        },
        "machine": records.machine_info(),
        "versions": records.library_versions(),
        "memory": records.peak_memory_mb(),
        "ours": ours,
        "reference": None,
        "speedup": None,
        "agreement": None,
    }
