"""The CLI's last line of defence: signals, library warnings and unexpected errors, each as one stderr line.

Nothing here depends on typer's or click's internal module layout: a parse error is recognised by the
attributes every click-style exception has (`format_message`, `exit_code`), an interrupt by our own signal
handler.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import signal
import sys
import threading
import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

INTERNAL_ERROR_EXIT = 70  # BSD sysexits EX_SOFTWARE: a bug in clipsam, not in the user's input
VERBOSE_FLAGS = ("-v", "--verbose")
_SIGNAL_EXITS = {signal.SIGINT: (130, "interrupted"), signal.SIGTERM: (143, "terminated")}
QUIET_LIBRARY_ENV = ("TRANSFORMERS_VERBOSITY", "DIFFUSERS_VERBOSITY")
_PACKAGES = ("clipsam", "clipsam.engine", "clipsam.export", "clipsam.kernels", "clipsam.cli")


class Interrupted(BaseException):
    """Raised by our SIGINT / SIGTERM handler. Not a KeyboardInterrupt, so no library swallows it first
    (typer turns KeyboardInterrupt into a silent exit 130); `except BaseException` cleanups still run."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.exit_code, self.message = _SIGNAL_EXITS.get(signum, (128 + signum, "interrupted"))


def wants_verbose(args: list[str]) -> bool:
    """-v / --verbose anywhere on the command line shows tracebacks and library warnings."""
    return any(arg in VERBOSE_FLAGS for arg in args)


@contextmanager
def interrupt_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise Interrupted while the block runs (main thread only), then the old handlers
    come back (in-process callers such as the tests keep theirs)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_interrupted(signum: int, _frame) -> None:
        raise Interrupted(signum)

    previous = {signum: signal.signal(signum, raise_interrupted) for signum in _SIGNAL_EXITS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@dataclass
class LibraryNoise:
    """Warnings and log records that third-party libraries emitted during one command."""

    warned: list[warnings.WarningMessage] = field(default_factory=list)
    records: list[logging.LogRecord] = field(default_factory=list)


class _Collector(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]):
        super().__init__(logging.WARNING)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def captured_library_noise(verbose: bool) -> Iterator[LibraryNoise]:
    """Collect Python warnings and root-logger records while the block runs; on the way out print clipsam's
    own warnings as `clipsam: warning: …` lines, and everything else only when `verbose`."""
    # Libraries that log through their own stderr handlers read these when first imported.
    quieted = [] if verbose else [name for name in QUIET_LIBRARY_ENV if name not in os.environ]
    os.environ.update(dict.fromkeys(quieted, "error"))
    noise = LibraryNoise()
    collector = _Collector(noise.records)
    root = logging.getLogger()
    root.addHandler(collector)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            try:
                yield noise
            finally:
                noise.warned.extend(caught)
    finally:
        root.removeHandler(collector)
        for name in quieted:
            os.environ.pop(name, None)
        _print_noise(noise, verbose)


def _print_noise(noise: LibraryNoise, verbose: bool) -> None:
    for message in noise.warned:
        if _is_clipsam_file(message.filename):
            print(f"clipsam: warning: {' '.join(str(message.message).split())}", file=sys.stderr)
        elif verbose:
            text = warnings.formatwarning(
                message.message, message.category, message.filename, message.lineno, message.line
            )
            print(text.rstrip(), file=sys.stderr)
    if verbose:
        for record in noise.records:
            print(f"{record.levelname.lower()}: {record.name}: {record.getMessage()}", file=sys.stderr)


def _is_clipsam_file(filename: str) -> bool:
    """Whether a warning was issued from clipsam's own code (any of its package folders)."""
    path = Path(filename).resolve()
    return any(folder in path.parents for folder in _package_folders())


@functools.cache
def _package_folders() -> frozenset[Path]:
    folders = set()
    for name in _PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is not None:
            folders.update(Path(p).resolve() for p in spec.submodule_search_locations or [])
    return frozenset(folders)


def usage_error(err: BaseException) -> tuple[str, int] | None:
    """(message, exit code) of a click / typer parse error, by duck typing; None for anything else."""
    format_message = getattr(err, "format_message", None)
    exit_code = getattr(err, "exit_code", None)
    if callable(format_message) and isinstance(exit_code, int):
        return str(format_message()), exit_code
    return None


def internal_error_line(err: BaseException) -> str:
    """`internal error: <type>: <message> (run with -v for the traceback)`, on one line."""
    text = " ".join(str(err).split()) or "(no message)"
    return f"internal error: {type(err).__name__}: {text} (run with -v for the traceback)"


def print_traceback(err: BaseException) -> None:
    traceback.print_exception(err, file=sys.stderr)
