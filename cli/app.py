"""The `clipsam` command line. Each command parses, calls one library function, and prints.

Errors a user can cause end as one line on stderr and exit code 2; nothing is left half-written.
"""

from __future__ import annotations

import sys

import typer

try:  # typer >= 0.26 vendors its own click
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - older typer on top of click
    from click import exceptions as click_exceptions

from clipsam.cli import (
    commands_bench,
    commands_eval,
    commands_export,
    commands_models,
    commands_segment,
    commands_trt,
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

USER_ERROR_EXIT = 2


def fail(message: str, code: int = USER_ERROR_EXIT) -> None:
    """Print one error line on stderr and exit."""
    first_line = " ".join(str(message).split())
    print(f"clipsam: error: {first_line}", file=sys.stderr)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: runs the typer app and turns user errors into one stderr line."""
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="clipsam", standalone_mode=False)
    except ClipsamError as err:
        fail(str(err))
    except click_exceptions.NoArgsIsHelpError as err:
        print(err.ctx.get_help() if err.ctx else "", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT)
    except click_exceptions.ClickException as err:
        fail(err.format_message(), err.exit_code)
    except click_exceptions.Abort:
        fail("interrupted", 130)
    except KeyboardInterrupt:
        fail("interrupted", 130)
    sys.exit(code if isinstance(code, int) else 0)
