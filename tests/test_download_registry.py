"""The model registry and `clipsam download` (against a loopback HTTP server only; never the internet)."""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from clipsam.engine.errors import ClipsamError, DownloadError
from clipsam.export import download as dl
from clipsam.export.registry import MODELS, get_model
from tests.cli_helpers import assert_one_line_error, run_cli

PAYLOAD = b"clipsam test checkpoint bytes " * 1000


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        if self.path == "/missing.pt":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        self.wfile.write(PAYLOAD)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server_url():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/x.pt"


def _spec(url: str, sha256: str | None):
    return replace(get_model("sam2.1-hiera-tiny"), url=url, sha256=sha256)


def test_download_verifies_and_renames_atomically(server_url, tmp_path):
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    path, got = dl.download(_spec(f"{server_url}/ok.pt", digest), tmp_path)
    assert got == digest and path.read_bytes() == PAYLOAD
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_sha_mismatch_leaves_nothing(server_url, tmp_path):
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        dl.download(_spec(f"{server_url}/ok.pt", "0" * 64), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_http_error_and_offline_are_one_line(server_url, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        dl.download(_spec(f"{server_url}/missing.pt", None), tmp_path)
    with pytest.raises(DownloadError, match="cannot reach 127.0.0.1") as info:
        dl.download(_spec(_closed_port_url(), None), tmp_path, timeout_s=5)
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_cli_download_offline(monkeypatch, tmp_path, capsys):
    offline = {**MODELS, "sclip-vit-b16": replace(MODELS["sclip-vit-b16"], url=_closed_port_url())}
    monkeypatch.setattr("clipsam.engine.models.zoo.MODELS", offline)
    code, _, err = run_cli(["download", "sclip-vit-b16", "--dir", tmp_path], capsys)
    assert_one_line_error(code, err, "cannot reach")
    assert list(tmp_path.iterdir()) == []


def test_unknown_model_lists_valid_names():
    with pytest.raises(ClipsamError, match="sam2.1-hiera-tiny") as info:
        get_model("sam3")
    assert "sclip-vit-b16" in str(info.value)


def test_registry_matches_sam2_configs_and_sha256sums():
    import sam2

    package_dir = Path(sam2.__file__).parent
    for spec in MODELS.values():
        if spec.family == "sam2":
            assert (package_dir / spec.arch).is_file(), spec.arch
            assert spec.url.endswith(spec.filename)
    sums = dict(
        reversed(line.split())
        for line in (Path(__file__).parents[1] / "checkpoints" / "SHA256SUMS").read_text().splitlines()
    )
    clip = MODELS["sclip-vit-b16"]
    assert sums[clip.filename] == clip.sha256 and clip.sha256 in clip.url
    assert {s.name for s in MODELS.values()} >= {
        "sam2.1-hiera-tiny", "sam2.1-hiera-small", "sam2.1-hiera-base-plus", "sam2.1-hiera-large",
        "sam2-hiera-tiny", "sam2-hiera-small", "sam2-hiera-base-plus", "sam2-hiera-large",
    }  # fmt: skip
