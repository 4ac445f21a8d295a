"""The `clipsam` command line. Each command parses, calls one library function, and prints.

Errors a user can cause end as one line on stderr and exit code 2; an unexpected internal error ends as one
`clipsam: error: internal error: …` line and exit code 70 (the traceback only with -v); Ctrl-C ends as
`clipsam: interrupted` and exit code 130. Nothing is left half-written.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import os
import platform
import sys
from typing import Annotated

import typer

from clipsam import __version__
from clipsam.cli import (
    commands_bench,
    commands_eval,
    commands_export,
    commands_models,
    commands_segment,
    commands_serve,
    commands_trt,
    guard,
)
from clipsam.engine.errors import ClipsamError

app = typer.Typer(
    name="clipsam",
    help="Open-vocabulary segmentation: SCLIP dense maps prompt SAM2, run as exported artifacts.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
commands_segment.register(app)
commands_models.register(app)
commands_export.register(app)
commands_eval.register(app)
commands_trt.register(app)
commands_bench.register(app)
commands_serve.register(app)

USER_ERROR_EXIT = 2
# Resolved versions printed by `clipsam --version -v` (the lock file pins them all: constraints.txt).
KEY_PACKAGES = (
    "torch",
    "torchvision",
    "sam2",
    "open_clip_torch",
    "onnx",
    "onnxruntime",
    "openvino",
    "numpy",
    "numba",
    "pillow",
    "typer",
    "rich",
    "diffusers",
    "transformers",
)


@app.callback(invoke_without_command=True)
def root(
    ctx: typer.Context,
    version: Annotated[
        bool, typer.Option("--version", help="Print the version (with -v: the key packages' versions too).")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Tracebacks and library warnings on stderr.")
    ] = False,
) -> None:
    """Open-vocabulary segmentation: SCLIP dense maps prompt SAM2, run as exported artifacts."""
    if version:
        print_version(verbose)
        raise typer.Exit(0)
    if ctx.invoked_subcommand is None:
        print(ctx.get_help(), file=sys.stderr)
        raise typer.Exit(USER_ERROR_EXIT)


def print_version(verbose: bool) -> None:
    """`clipsam X.Y.Z`; with verbose, one `package version` line per key package and Python."""
    print(f"clipsam {__version__}")
    if verbose:
        from clipsam.engine.manifest import package_versions

        print(f"python {platform.python_version()}")
        for package, installed in package_versions(KEY_PACKAGES, missing="not installed").items():
            print(f"{package} {installed}")


def fail(message: str, code: int = USER_ERROR_EXIT) -> None:
    """Print one error line on stderr and exit."""
    sys.exit(_error_line(message, code))


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: runs the typer app; every way out is an exit code and, on failure, one
    stderr line."""
    args = [str(arg) for arg in (sys.argv[1:] if argv is None else argv)]
    command = typer.main.get_command(app)
    if not args:
        with command.make_context("clipsam", [], resilient_parsing=True) as ctx:
            print(ctx.get_help(), file=sys.stderr)
        sys.exit(USER_ERROR_EXIT)
    sys.exit(_run(command, _verbose_first(command, args), guard.wants_verbose(args)))


def console_main() -> None:
    """The `clipsam` executable (and `python -m clipsam`): `main`, then a quick exit.

    Everything a command writes is complete and closed when it returns (outputs are renamed into place), so
    after flushing and running the atexit handlers the process ends without tearing its modules down: that
    teardown (numba's compiler, onnxruntime's sessions) costs a few hundred milliseconds and does nothing.
    """
    try:
        main()
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def _verbose_first(command, args: list[str]) -> list[str]:
    """-v / --verbose is accepted anywhere: after a subcommand that has no such option of its own it moves
    in front of it, to the top-level option (`clipsam dense … -v` = `clipsam -v dense …`)."""
    names = [i for i, arg in enumerate(args) if arg in getattr(command, "commands", {})]
    if not names:
        return args
    at = names[0]
    sub = command.commands[args[at]]
    own = {opt for param in sub.params for opt in getattr(param, "opts", [])}
    moved = [arg for arg in args[at + 1 :] if arg in guard.VERBOSE_FLAGS and arg not in own]
    rest = [arg for arg in args[at + 1 :] if arg not in moved]
    return [*args[:at], *moved, args[at], *rest]


def _run(command, args: list[str], verbose: bool) -> int:
    try:
        with guard.interrupt_signals(), guard.captured_library_noise(verbose):
            result = command.main(args=args, prog_name="clipsam", standalone_mode=False)
    except guard.Interrupted as err:
        return _line(err.message, err.exit_code)
    except KeyboardInterrupt:
        return _line("interrupted", 130)
    except ClipsamError as err:
        return _error_line(str(err), USER_ERROR_EXIT)
    except Exception as err:  # the last line of defence: whatever escaped, one line and a distinct code
        return _unexpected(err, verbose)
    if result == 130:  # typer turned a KeyboardInterrupt our handler did not see into a silent 130
        return _line("interrupted", 130)
    return result if isinstance(result, int) else 0


def _unexpected(err: Exception, verbose: bool) -> int:
    usage = guard.usage_error(err)
    if usage is not None:
        return _error_line(*usage)
    environment = _environment_message(err)
    if environment is not None:
        return _error_line(environment, USER_ERROR_EXIT)
    if verbose:
        guard.print_traceback(err)
    return _error_line(guard.internal_error_line(err), guard.INTERNAL_ERROR_EXIT)


def _environment_message(err: Exception) -> str | None:
    """A one-line reason for failures of the machine rather than of clipsam (full disk, no permission,
    no memory); None for anything else."""
    if isinstance(err, MemoryError):
        return "out of memory: use a smaller image (--max-pixels) or fewer prompts (--max-prompts)"
    if not isinstance(err, OSError):
        return None
    where = f" '{err.filename}'" if err.filename else ""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on device writing{where}"
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"permission denied:{where} ({err.strerror})"
    return None


def _line(text: str, code: int) -> int:
    print(f"clipsam: {' '.join(str(text).split())}", file=sys.stderr)
    return code


def _error_line(message: str, code: int) -> int:
    return _line(f"error: {message}", code)
