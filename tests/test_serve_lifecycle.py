"""The service's life cycle as a process manager sees it: `clipsam serve` in a process of its own (its own
session) gets SIGTERM with requests in flight and drains them; a restart while a client retries loses no
request. Requests are held in flight without depending on speed: the client sends half of each body and
waits for the ingress to count it in flight before the signal, then sends the rest."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
from PIL import Image

from clipsam.client import Client
from clipsam.engine.bench.demo_scene import demo_scene
from tests.serve_helpers import free_port, http, post_json

START_S, EXIT_S, GONE_S = 300.0, 120.0, 60.0
STACK_DUMP = ("SIGTERM received", "PC: @", "*** ", "Aborted", "Traceback")


def scene_body(tmp: Path, seed: int) -> dict:
    path = tmp / f"scene{seed}.png"
    Image.fromarray(demo_scene(64, 80, seed=seed)).save(path)
    image = base64.b64encode(path.read_bytes()).decode()
    return {"image": image, "vocabulary": ["sky", "car", "road"], "min_confidence": 0.0}


class ServeProcess:
    """`python -m clipsam serve` in a new session, stderr to a file."""

    def __init__(self, artifacts: Path, port: int, log: Path):
        self.url, self.log = f"http://127.0.0.1:{port}", log
        command = [sys.executable, "-m", "clipsam", "serve", "--artifacts", str(artifacts)]
        command += ["--port", str(port), "--drain-timeout", "60"]
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
        self.stream = log.open("wb")
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=self.stream, start_new_session=True, env=env
        )
        self.sid = self.process.pid  # the session's id: the leader's pid

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.stderr()
            if "clipsam serving on" in self.stderr():  # ready, and its SIGTERM handler is in place
                assert http("GET", f"{self.url}/readyz", timeout=10)[0] == 200
                return
            time.sleep(0.5)
        raise AssertionError(f"not ready within {START_S:g} s: {self.stderr()}")

    def session_pids(self) -> set[int]:
        pids = set()
        for process in psutil.process_iter(["pid"]):
            try:
                if os.getsid(process.pid) == self.sid:
                    pids.add(process.pid)
            except (ProcessLookupError, PermissionError):
                continue
        return pids

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(EXIT_S)
        self.stream.close()
        return code

    def stderr(self) -> str:
        if not self.stream.closed:
            self.stream.flush()
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        """Cleanup after a failed test: the whole session, by its id."""
        for pid in self.session_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def in_flight(url: str) -> float:
    text = http("GET", f"{url}/metrics", timeout=10)[2].decode()
    line = next(row for row in text.splitlines() if row.startswith("clipsam_requests_in_flight "))
    return float(line.split()[1])


def held_request(url: str, body: dict) -> tuple[socket.socket, bytes]:
    """A POST /v1/segment whose headers and first half of the body are sent; returns (socket, the rest)."""
    data = json.dumps(body).encode()
    host, port = url.removeprefix("http://").split(":")
    head = (
        f"POST /v1/segment HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    ).encode()
    connection = socket.create_connection((host, int(port)), timeout=120)
    connection.sendall(head + data[: len(data) // 2])
    return connection, data[len(data) // 2 :]


def finish(connection: socket.socket, rest: bytes) -> int:
    """Send the rest of the body; the HTTP status of the answer."""
    connection.sendall(rest)
    answer = b""
    while chunk := connection.recv(65536):
        answer += chunk
    connection.close()
    return int(answer.split(b" ", 2)[1])


def wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout_s:g} s")


@pytest.fixture()
def serving(artifacts: Path, tmp_path: Path):
    started = []

    def start(port: int | None = None, name: str = "serve") -> ServeProcess:
        process = ServeProcess(artifacts, port or free_port(), tmp_path / f"{name}.log")
        started.append(process)
        process.wait_ready()
        return process

    yield start
    for process in started:
        process.kill()


def test_sigterm_drains_four_requests_in_flight_and_leaves_no_process(serving, tmp_path):
    service = serving()
    held = [held_request(service.url, scene_body(tmp_path, seed)) for seed in range(4)]
    wait_for(lambda: in_flight(service.url) == 4, 60, "4 requests in flight at the ingress")
    pids = service.session_pids() | {child.pid for child in psutil.Process(service.sid).children(True)}
    assert len(pids) > 1  # Ray's processes live in the service's session
    service.process.send_signal(signal.SIGTERM)
    wait_for(lambda: http("GET", f"{service.url}/readyz", timeout=10)[0] == 503, 60, "readiness false")
    status, headers, answer = post_json(f"{service.url}/v1/segment", scene_body(tmp_path, 9), timeout=30)
    assert status == 503 and headers["Retry-After"] and "shutting down" in json.loads(answer)["error"]
    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(lambda pair: finish(*pair), held))
    assert statuses == [200] * 4
    assert service.process.wait(EXIT_S) == 0
    service.stream.close()
    err = service.stderr()
    assert err.strip().splitlines()[-1] == "clipsam: stopped (4 requests drained)", err
    assert not any(marker in err for marker in STACK_DUMP), err
    wait_for(lambda: not any(psutil.pid_exists(pid) for pid in pids), GONE_S, f"Ray processes {pids} gone")
    assert not service.session_pids()


def test_restart_while_a_client_retries_loses_no_request(serving, tmp_path):
    """Requests 0-2 before the restart, 3 sent with SIGTERM (drained, 503 or refused: retried), 4-9 only once
    the old process is gone (refused until the new one listens: retried); all ten answered."""
    old = serving(name="old")
    port = int(old.url.rsplit(":", 1)[1])
    bodies = [scene_body(tmp_path, 20 + index) for index in range(10)]
    client = Client(old.url, retries=1200, retry_wait_s=0.25, retry_unreachable=True)
    gates = {3: threading.Event(), 4: threading.Event()}

    def send(index: int) -> dict:
        if index in gates:
            assert gates[index].wait(EXIT_S + START_S)
        body = bodies[index]
        return client.segment(base64.b64decode(body["image"]), body["vocabulary"], min_confidence=0.0)

    with ThreadPoolExecutor(1) as pool:  # one client, one request after another, through the restart
        results = [pool.submit(send, index) for index in range(len(bodies))]
        first = [future.result(timeout=120) for future in results[:3]]
        old.process.send_signal(signal.SIGTERM)
        gates[3].set()
        assert old.process.wait(EXIT_S) == 0
        old.stream.close()
        assert "clipsam: stopped (" in old.stderr()
        gates[4].set()  # the port is closed now: these wait for the new process
        new = serving(port, name="new")
        records = first + [future.result(timeout=START_S) for future in results[3:]]
    assert len(records) == len(bodies) and all(record["counts"]["prompts"] > 0 for record in records)
    assert new.stop() == 0
