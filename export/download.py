"""`clipsam download`: the only code in clipsam that touches the network.

The file streams into a temp file beside its destination while its sha256 is computed; only a complete,
verified file is renamed into place, so an interrupted or failed download leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from clipsam.engine.errors import DownloadError
from clipsam.engine.models.zoo import ModelSpec, checkpoint_path, default_checkpoint_dir  # noqa: F401
from clipsam.engine.outputs import new_file_mode
from clipsam.export.checkpoints import file_sha256

_CHUNK = 1 << 20
ProgressFn = Callable[[int, int | None], None]


def download(
    spec: ModelSpec,
    directory: Path | None = None,
    *,
    force: bool = False,
    timeout_s: float = 30.0,
    progress: ProgressFn | None = None,
) -> tuple[Path, str]:
    """Fetch spec's checkpoint into `directory`; returns (path, sha256).

    An existing file is verified (when a digest is known) and kept unless `force`.
    Raises DownloadError (one line) when offline, on HTTP errors, on a size or sha256 mismatch.
    """
    destination = checkpoint_path(spec, directory)
    if destination.is_file() and not force:
        digest = file_sha256(destination)
        _verify_digest(spec, digest, destination)
        return destination, digest
    destination.parent.mkdir(parents=True, exist_ok=True)
    folder = destination.parent
    handle, tmp_name = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".part", dir=folder)
    os.fchmod(handle, new_file_mode())  # mkstemp makes 0600; a checkpoint gets the mode the umask gives
    try:
        with os.fdopen(handle, "wb") as sink:
            digest = _stream(spec.url, sink, timeout_s, progress)
        _verify_digest(spec, digest, destination)
        os.replace(tmp_name, destination)
    finally:
        Path(tmp_name).unlink(missing_ok=True)
    return destination, digest


def _stream(url: str, sink, timeout_s: float, progress: ProgressFn | None) -> str:
    host = urlparse(url).netloc or url
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            total = response.headers.get("Content-Length")
            expected = int(total) if total and total.isdigit() else None
            received = 0
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                sink.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                if progress is not None:
                    progress(received, expected)
    except urllib.error.HTTPError as err:
        raise DownloadError(f"download of {url} failed: HTTP {err.code} {err.reason}") from err
    except (TimeoutError, urllib.error.URLError, ConnectionError) as err:
        reason = getattr(err, "reason", err)
        raise DownloadError(
            f"cannot reach {host} ({reason}); download {url} on a machine with network and copy it into "
            "the checkpoints folder"
        ) from err
    if expected is not None and received != expected:
        raise DownloadError(f"download of {url} was cut short: {received} of {expected} bytes")
    return digest.hexdigest()


def _verify_digest(spec: ModelSpec, digest: str, destination: Path) -> None:
    if spec.sha256 is not None and digest != spec.sha256:
        raise DownloadError(
            f"sha256 mismatch for {destination.name}: got {digest}, expected {spec.sha256}; "
            "delete the file and download again"
        )
