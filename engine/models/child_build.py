"""The engine cache's builds run in a child process (`python -m clipsam.export.engine_build`): the runtime
process never imports the export code or torch, and the child dies with it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from clipsam.engine.errors import ClipsamError

if TYPE_CHECKING:
    from clipsam.engine.models.engines import EngineSpec

Log = Callable[[str], None]


def export_in_child(spec: EngineSpec, out_dir: Path, base: Path | None, log: Log) -> None:
    """Run the export (export/engine_build.py) in a child process, relaying its progress lines to `log`.

    The child dies with this process (PR_SET_PDEATHSIG), so a killed run leaves no export writing behind it.
    """
    request = {**asdict(spec), "out_dir": str(out_dir), "base": str(base) if base else None}
    command = [sys.executable, "-m", "clipsam.export.engine_build", json.dumps(request, default=str)]
    child = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=_die_with_parent,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines = []
    assert child.stdout is not None
    try:
        with child.stdout:
            for line in child.stdout:
                lines.append(line.rstrip())
                if line.startswith("progress: "):
                    log(line[len("progress: ") :].rstrip())
    except BaseException:  # interrupted (Ctrl-C, SIGTERM): the export stops with this run
        child.kill()
        child.wait()
        shutil.rmtree(out_dir, ignore_errors=True)
        raise
    if child.wait() != 0:
        shutil.rmtree(out_dir, ignore_errors=True)
        detail = next((line for line in reversed(lines) if line.startswith("clipsam: error: ")), None)
        reason = detail[len("clipsam: error: ") :] if detail else (lines[-1] if lines else "no output")
        if detail and not reason.startswith("internal error"):
            raise ClipsamError(reason)  # the builder's own one-line error (a corrupt checkpoint, …)
        raise ClipsamError(f"building the engine failed: {reason}")


def _die_with_parent() -> None:
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
