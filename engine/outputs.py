"""Writing results (COCO-style JSON, pictures) safely: temp file beside the destination, normal file mode,
all-or-nothing renames.

Every output of one command (picture, JSON, npz, eval files) goes through an OutputTransaction: each is
written completely to a temp file in its destination folder, and only when all are complete are they renamed
into place. Any failure (an exception, a full disk, Ctrl-C) removes every temp file and every output this
transaction had already renamed, so a failed run leaves no result behind. Temp names carry the writer's
process id, so a temp left by a killed process (SIGKILL cannot be caught) is removed by the next write of
the same output once that process is gone.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from clipsam.engine.errors import OutputPathError
from clipsam.engine.types import SegmentationResult


def result_to_json(result: SegmentationResult, image_file: str) -> dict:
    """The COCO-style record of one image's segments (docs/segment-output.schema.json)."""
    return {
        "image": {"file": image_file, "height": result.height, "width": result.width},
        "models": result.models,
        "random_weights": result.random_weights,
        "class_names": list(result.class_names),
        "segments": [
            {
                "class_id": seg.class_id,
                "class_name": seg.class_name,
                "score": round(float(seg.score), 6),
                "bbox": [float(v) for v in seg.bbox_xywh],
                "area": int(seg.area),
                "segmentation": {"size": list(seg.rle["size"]), "counts": seg.rle["counts"]},
            }
            for seg in result.segments
        ],
        "timings_ms": {k: round(float(v), 3) for k, v in result.timings_ms.items()},
        "counts": {k: int(v) for k, v in result.counts.items()},
    }


def write_json(path: Path | str, record: dict) -> None:
    with atomic_output(path, "w") as stream:
        dump_json(record, stream)


def write_picture(path: Path | str, picture: np.ndarray) -> None:
    """Save uint8 [H, W, 3] as PNG or JPEG (by suffix), atomically."""
    with atomic_output(path, "wb") as stream:
        save_picture(picture, stream, path)


def write_results(
    picture_path: Path, picture: np.ndarray, json_path: Path | None, record: dict | None
) -> None:
    """The picture and (when json_path is given) the JSON record as one transaction: both appear, or neither
    (a failure on either, a full disk included, leaves no output and no temp file)."""
    with output_transaction() as outputs:
        with outputs.open(picture_path, "wb") as stream:
            save_picture(picture, stream, picture_path)
        if json_path is not None:
            with outputs.open(json_path, "w") as stream:
                dump_json(record, stream)


PNG_COMPRESS_LEVEL = 1


def dump_json(record: dict, stream) -> None:
    json.dump(record, stream, indent=1)
    stream.write("\n")


def save_picture(picture: np.ndarray, stream, path: Path | str) -> None:
    """uint8 [H, W, 3] into `stream` as JPEG for a .jpg / .jpeg `path`, PNG otherwise (zlib level
    PNG_COMPRESS_LEVEL: lossless either way; measured in benchmarks/README.md, "Many images")."""
    if Path(path).suffix.lower() in (".jpg", ".jpeg"):
        Image.fromarray(picture).save(stream, format="JPEG")
    else:
        Image.fromarray(picture).save(stream, format="PNG", compress_level=PNG_COMPRESS_LEVEL)


TEMP_SUFFIX = ".clipsam-tmp"
_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where Linux exposes it (/proc/self/status)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:  # elsewhere: set and restore (racy only against other threads changing the umask)
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def new_file_mode() -> int:
    """The mode open() gives a new file under the current umask (0o644 under umask 022)."""
    return 0o666 & ~current_umask()


def temp_file_beside(path: Path) -> tuple[int, Path]:
    """(fd, temp path) of a new file in `path`'s folder with the normal file mode (mkstemp makes 0600)."""
    remove_stale_temps(path)
    handle, name = tempfile.mkstemp(
        prefix=f".{path.name}.{os.getpid()}.", suffix=TEMP_SUFFIX, dir=path.parent
    )
    os.fchmod(handle, new_file_mode())
    return handle, Path(name)


def remove_stale_temps(path: Path) -> None:
    """Remove temps of `path` left by writer processes that no longer exist (killed mid-write)."""
    prefix = f".{path.name}."
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return
    for entry in entries:
        if not (entry.name.startswith(prefix) and entry.name.endswith(TEMP_SUFFIX)):
            continue
        pid_text = entry.name[len(prefix) :].split(".", 1)[0]
        if pid_text.isdigit() and int(pid_text) != os.getpid() and not _process_alive(int(pid_text)):
            Path(entry.path).unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, belongs to someone else
    return True


def write_error(path: Path, err: OSError) -> OutputPathError:
    """The one-line error of a failed write of `path` (full disk said as such)."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return OutputPathError(f"no space left on device writing '{path}'")
    return OutputPathError(f"cannot write '{path}': {err.strerror or err}")


class OutputTransaction:
    """Output files that appear together or not at all (see the module docstring)."""

    def __init__(self) -> None:
        self._pending: list[tuple[Path, Path]] = []  # (temp, destination), in writing order
        self._renamed: list[Path] = []

    @contextmanager
    def open(self, path: Path | str, mode: str = "wb") -> Iterator:
        """A stream onto a temp file for `path`; kept for the commit only if the block completes."""
        path = Path(path)
        try:
            handle, temp = temp_file_beside(path)
        except OSError as err:
            raise write_error(path, err) from err
        self._pending.append((temp, path))
        try:
            with os.fdopen(handle, mode) as stream:
                yield stream
        except OSError as err:
            raise write_error(path, err) from err

    def commit(self) -> None:
        """Rename every temp into place, in writing order."""
        while self._pending:
            temp, path = self._pending[0]
            try:
                os.replace(temp, path)
            except OSError as err:
                raise write_error(path, err) from err
            self._pending.pop(0)
            self._renamed.append(path)

    def abort(self) -> None:
        """Remove every temp and every output this transaction already renamed into place."""
        for temp, _ in self._pending:
            temp.unlink(missing_ok=True)
        for path in self._renamed:
            path.unlink(missing_ok=True)
        self._pending.clear()
        self._renamed.clear()


@contextmanager
def output_transaction() -> Iterator[OutputTransaction]:
    """`with output_transaction() as outputs: with outputs.open(path) as stream: …` — commits on success,
    aborts (removing everything it wrote) on any exception, Ctrl-C included."""
    transaction = OutputTransaction()
    try:
        yield transaction
        transaction.commit()
    except BaseException:
        transaction.abort()
        raise


@contextmanager
def atomic_output(path: Path | str, mode: str = "wb") -> Iterator:
    """One output file written through a temp file; it replaces `path` only when the block completes."""
    with output_transaction() as outputs, outputs.open(path, mode) as stream:
        yield stream
