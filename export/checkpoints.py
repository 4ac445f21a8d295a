"""Reading checkpoint files safely: existence, integrity, `torch.load(weights_only=True)`, strict keys."""

from __future__ import annotations

import hashlib
import pickle
import struct
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch

from clipsam.engine.errors import CheckpointError

_CHUNK = 1 << 20
# What torch.load raises on a damaged or foreign file (found by fuzzing truncated / byte-flipped checkpoints:
# a legacy pickle of text gives KeyError, a damaged zip BadZipFile, a damaged record name UnicodeDecodeError).
LOAD_ERRORS = (
    RuntimeError,
    pickle.UnpicklingError,
    zipfile.BadZipFile,
    EOFError,
    ValueError,
    OSError,
    KeyError,
    IndexError,
    TypeError,
    AttributeError,
    struct.error,
    NotImplementedError,
)


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_checkpoint(path: Path | str, what: str) -> dict[str, torch.Tensor]:
    """Load a torch checkpoint as a flat state dict of tensors.

    `what` names the model the file is meant for, so errors read "SAM2 checkpoint 'x.pt' …".
    Accepts a bare state dict or one wrapped under "model" / "state_dict" (SAM2 and open_clip layouts).
    Raises CheckpointError for a missing path, a directory, an empty, truncated or non-torch file.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{what} checkpoint '{path}' does not exist (see `clipsam download --help`)")
    if not path.is_file():
        raise CheckpointError(f"{what} checkpoint '{path}' is not a file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{what} checkpoint '{path}' is empty")
    try:
        loaded = _torch_load(path)
    except PermissionError as err:
        raise CheckpointError(f"cannot read {what} checkpoint '{path}': {err.strerror}") from err
    except LOAD_ERRORS as err:
        message = f"{what} checkpoint '{path}' is corrupt or not a torch file ({first_line(err)})"
        raise CheckpointError(message) from err
    return _unwrap_state_dict(loaded, path, what)


def _torch_load(path: Path):
    """torch.load(weights_only=True). torch's warnings are passed on as torch's own (the CLI shows them only
    with -v): its TorchScript-archive warning names the caller's line, which would make it read as ours."""
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            return torch.load(path, map_location="cpu", weights_only=True)
    finally:  # outside the recording block: a warning re-emitted inside it would be recorded again
        for item in caught:
            torch_file = "TorchScript archive" in str(item.message)
            filename = torch.serialization.__file__ if torch_file else item.filename
            warnings.warn_explicit(item.message, item.category, filename, item.lineno)


def is_torchscript_archive(path: Path) -> bool:
    """Whether `path` is a TorchScript zip (OpenAI's CLIP release format); False for a damaged zip, which
    torch.load then reports as corrupt."""
    try:
        if not path.is_file() or not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("/constants.pkl") or "/code/" in name for name in archive.namelist())
    except (OSError, zipfile.BadZipFile, ValueError, EOFError):
        return False


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _unwrap_state_dict(loaded: object, path: Path, what: str) -> dict[str, torch.Tensor]:
    for key in ("model", "state_dict"):
        if isinstance(loaded, Mapping) and isinstance(loaded.get(key), Mapping):
            loaded = loaded[key]
    if not isinstance(loaded, Mapping) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise CheckpointError(f"{what} checkpoint '{path}' holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in loaded.items()}


def check_keys_and_shapes(
    state: Mapping[str, torch.Tensor], model: torch.nn.Module, path: Path | str, arch: str
) -> None:
    """Strict check of a state dict against a model; the error names the file and the architecture."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shared = set(expected) & set(state)
    mismatched = sorted(k for k in shared if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or unexpected or mismatched:
        parts = []
        if mismatched:
            k = mismatched[0]
            parts.append(
                f"{len(mismatched)} shape mismatches (e.g. {k}: file {tuple(state[k].shape)} "
                f"vs model {tuple(expected[k].shape)})"
            )
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
        raise CheckpointError(
            f"checkpoint '{path}' does not match architecture '{arch}': " + "; ".join(parts)
        )
