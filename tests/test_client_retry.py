"""The service client's retry on 503 sends the request's own body again (not the 503's error body)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from clipsam.client import Client


def test_a_retry_after_503_resends_the_request_body():
    received = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(json.loads(body))
            status = 503 if len(received) == 1 else 200
            answer = json.dumps({"error": "starting"} if status == 503 else {"ok": True}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client = Client(f"http://127.0.0.1:{server.server_port}", retries=2, retry_wait_s=0.01)
        status, _, data = client.request("POST", "/v1/segment", {"image": "abc", "vocabulary": ["sky"]})
    finally:
        server.shutdown()
        server.server_close()
    assert status == 200 and json.loads(data) == {"ok": True}
    assert received == [{"image": "abc", "vocabulary": ["sky"]}] * 2
