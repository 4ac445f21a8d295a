"""The service client's retry on 503 sends the request's own body again (not the 503's error body); Serve's
plain-text 500 (a replica lost under the request) is retried, clipsam's own JSON 500 is not."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from clipsam.client import Client, ServiceError

BODY = {"image": "abc", "vocabulary": ["sky"]}


def _post(answers: list[tuple[int, str, bytes]], received: list) -> tuple[int, bytes]:
    """POST BODY with a retrying Client to a loopback server that gives `answers` (status, content type,
    body) in turn, then 200 {"ok": true}; the bodies it received are appended to `received`."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            index = len(received) - 1
            status, kind, answer = (
                answers[index] if index < len(answers) else (200, "application/json", b'{"ok": true}')
            )
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = Client(f"http://127.0.0.1:{server.server_port}", retries=2, retry_wait_s=0.01)
        status, _, data = client.request("POST", "/v1/segment", BODY)
    finally:
        server.shutdown()
        server.server_close()
    return status, data


def test_a_retry_after_503_resends_the_request_body():
    received = []
    status, data = _post([(503, "application/json", json.dumps({"error": "starting"}).encode())], received)
    assert status == 200 and json.loads(data) == {"ok": True}
    assert received == [BODY] * 2


def test_serve_plain_500_is_retried_and_clipsams_json_500_is_not():
    received = []
    status, data = _post([(500, "text/plain", b"Internal Server Error")], received)
    assert status == 200 and json.loads(data) == {"ok": True} and received == [BODY] * 2
    received = []
    ours = json.dumps({"error": "internal error: ValueError: boom"}).encode()
    with pytest.raises(ServiceError, match="answered 500: internal error: ValueError: boom"):
        _post([(500, "application/json", ours)], received)
    assert received == [BODY]
