"""Running the CLI in-process (fast) or as a subprocess (proves what a user's shell sees)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from clipsam.cli.app import main


def run_cli(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `clipsam ARGS` run in this process."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    code = info.value.code if isinstance(info.value.code, int) else 1
    return code, captured.out, captured.err


def run_cli_subprocess(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "clipsam", *map(str, args)], capture_output=True, text=True, timeout=timeout
    )


def assert_one_line_error(code: int, err: str, fragment: str) -> None:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code != 0, f"expected a failure, got exit 0 (stderr: {err!r})"
    assert "Traceback" not in err, err
    assert len(lines) == 1, f"expected one stderr line, got {lines}"
    assert lines[0].startswith("clipsam: error: "), lines[0]
    assert fragment.lower() in lines[0].lower(), f"{fragment!r} not in {lines[0]!r}"


def linked_copy(artifacts, folder):
    """`folder`: a copy of the artifacts folder whose graphs are links and whose manifest and text folder are
    copies, so a test can change those and the session's artifacts stay as they are. Returns `folder`."""
    import shutil

    from clipsam.engine.manifest import MANIFEST_NAME

    folder.mkdir(parents=True)
    for path in artifacts.iterdir():
        if path.is_dir():
            shutil.copytree(path, folder / path.name)
        elif path.name == MANIFEST_NAME:
            shutil.copy(path, folder / path.name)
        else:
            (folder / path.name).symlink_to(path)
    return folder
