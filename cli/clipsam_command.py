"""The command class of clipsam's commands: options that take several values, and help grouped in panels.

`--vocabulary sky car "Stephen Curry"` (several values after one flag, as argparse's nargs="+" gives the
original scripts) and `--vocabulary sky --vocabulary car` both give ["sky", "car", ...]. Click has no
variable-length options, so the command rewrites its argument list before click parses it: every value
after a variadic flag, up to the next token that starts with "-", becomes one more `FLAG VALUE` pair. Only
public click API is used (Command.parse_args, Parameter.opts, Context.fail), so this works with click itself
and with the copy typer vendors.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from typer.core import TyperCommand

# Parameter names (the Python names of typer options) that take several values after one flag.
VARIADIC_PARAMS = frozenset({"vocabulary", "images"})
DEFAULT_PANEL = "Options"


class ClipsamCommand(TyperCommand):
    """A typer command whose VARIADIC_PARAMS options take several values, and whose plain-text help groups
    options under their `rich_help_panel` (typer shows panels only in rich markup mode)."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        flags = self._variadic_flags()
        if flags:
            try:
                args = expand_variadic(args, flags)
            except ValueError as err:
                ctx.fail(str(err))
        return super().parse_args(ctx, args)

    def format_options(self, ctx, formatter) -> None:
        arguments, panels = [], {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                arguments.append(record)
            else:
                panels.setdefault(getattr(param, "rich_help_panel", None) or DEFAULT_PANEL, []).append(record)
        if arguments:
            with formatter.section("Arguments"):
                formatter.write_dl(arguments)
        # Options without a panel (and --help) come last, after the grouped ones.
        for title, records in sorted(panels.items(), key=lambda item: item[0] == DEFAULT_PANEL):
            with formatter.section(title):
                formatter.write_dl(records)

    def _variadic_flags(self) -> dict[str, str]:
        """Every spelling of a variadic option ('--vocabulary', '-V') → its first long spelling."""
        flags: dict[str, str] = {}
        for param in self.params:
            if param.name in VARIADIC_PARAMS and param.param_type_name == "option":
                canonical = max(param.opts, key=len)
                flags.update({spelling: canonical for spelling in param.opts})
        return flags


def expand_variadic(args: Sequence[str], flags: dict[str, str]) -> list[str]:
    """`args` with the values after a variadic flag split into one `FLAG VALUE` pair each.

    flags: each spelling ('--vocabulary', '-V') → the flag to repeat. The value right after a flag is taken
    whatever it looks like only in the attached forms (`--vocabulary=-x`, `-V-x`); a separate first value that
    starts with "-" is an error (ValueError), as with argparse. Collecting stops at the next token starting
    with "-" and at "--", after which everything is passed through untouched.
    """
    expanded: list[str] = []
    tokens: Iterator[str] = iter(args)
    collecting: str | None = None
    for token in tokens:
        if token == "--":
            expanded.append(token)
            expanded.extend(tokens)
            break
        if collecting is not None and not token.startswith("-"):
            expanded += [collecting, token]
            continue
        collecting = _variadic_start(token, flags)
        if collecting is not None and token in flags:
            first = next(tokens, None)
            if first is None or (first.startswith("-") and len(first) > 1):
                raise ValueError(f"option '{token}' needs at least one value (e.g. {token} sky car)")
            expanded += [token, first]
            continue
        expanded.append(token)
    return expanded


def _variadic_start(token: str, flags: dict[str, str]) -> str | None:
    """The flag to repeat when `token` is a variadic flag alone, `--flag=value`, or `-Fvalue`; else None."""
    if token in flags:
        return flags[token]
    if token.startswith("--"):
        return flags.get(token.partition("=")[0]) if "=" in token else None
    if token.startswith("-") and len(token) > 2:
        return flags.get(token[:2])
    return None
