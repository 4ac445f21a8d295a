"""README.md against the real CLI: every `clipsam …` command it shows exists and every flag it names is an
option of that command (or, in prose, of the command its section is about); its JSON example satisfies the
output schema; its links stay inside the repository. Commands are checked on typer's click tree, the object
`--help` is printed from, so a renamed or removed option fails here."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

import jsonschema
import pytest
import typer

from clipsam.cli.app import app

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
LONG_FLAG = re.compile(r"(?<![\w-])--[A-Za-z][\w-]*")
ANY_FLAG = re.compile(r"(?<![\w-])(--[A-Za-z][\w-]*|-[A-Za-z])(?![\w-])")
# Sections about one command: their bare `--flag` spans must be options of that command.
SECTION_COMMANDS = {
    "`segment`": "segment",
    "Editing": "segment",
    "JSON output": "segment",
    "Evaluation": "eval",
}
OTHER_TOOLS = (
    "cmake",
    "ctest",
    "pip",
    "git",
    "cd",
    "ray",
    "curl",
    "schemathesis",
)  # flags of these are not clipsam's


@cache
def cli_tree():
    return typer.main.get_command(app)


def options_of(command: str) -> set[str]:
    """Flags `clipsam COMMAND --help` lists: the command's visible options and the top-level ones (-v, …)."""
    group = cli_tree()
    params = [*group.commands[command].params, *group.params]
    return {opt for p in params if not getattr(p, "hidden", False) for opt in [*p.opts, *p.secondary_opts]}


def every_option() -> set[str]:
    return {flag for name in cli_tree().commands for flag in options_of(name)}


def readme_snippets() -> list[tuple[str, str]]:
    """(section heading, code) for every inline code span and every line of a fenced block in README.md."""
    snippets, heading, fenced = [], "", False
    for line in README.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif fenced:
            snippets.append((heading, line))
        else:
            heading = line.lstrip("#").strip() if line.startswith("#") else heading
            snippets.extend((heading, span) for span in re.findall(r"`([^`]+)`", line))
    return snippets


def command_segments(code: str) -> list[list[str]]:
    """The shell commands in a snippet (split at &&, ;, |), as words, with a leading `do` / `then` dropped."""
    segments = []
    for part in re.split(r"&&|;|\|", code.split("#", 1)[0]):
        words = part.split()
        while words and words[0] in ("do", "then", "done"):
            words = words[1:]
        if words:
            segments.append(words)
    return segments


def readme_cli_lines() -> list[tuple[str, list[str]]]:
    return [
        (heading, words)
        for heading, code in readme_snippets()
        for words in command_segments(code)
        if words[0] == "clipsam"
    ]


def test_readme_shows_commands_and_flags():
    # Guards the tests below against a parser that finds nothing.
    assert len(readme_cli_lines()) >= 10
    assert sum(1 for _, code in readme_snippets() if code.startswith("--")) >= 20


@pytest.mark.parametrize("words", [w for _, w in readme_cli_lines()], ids=lambda w: " ".join(w)[:60])
def test_readme_command_lines_name_real_commands_and_options(words):
    command = words[1]
    assert command in cli_tree().commands, f"`clipsam {command}` is not a command"
    unknown = sorted(set(ANY_FLAG.findall(" ".join(words[2:]))) - options_of(command))
    assert not unknown, f"`clipsam {command}` has no option {unknown}"


def test_readme_flags_in_prose_are_real_options(pytestconfig):
    """A bare flag span (`--min-confidence`) belongs to its section's command, else to any clipsam command;
    flags on a pytest / install.sh line are checked against pytest's options / install.sh."""
    unknown = []
    for heading, code in readme_snippets():
        for words in command_segments(code):
            if words[0] == "clipsam" or words[0] in OTHER_TOOLS:
                continue
            for flag in LONG_FLAG.findall(" ".join(words)):
                if not _known_flag(flag, words, heading, pytestconfig):
                    unknown.append(f"{heading}: {flag} in `{code}`")
    assert not unknown, unknown


def _known_flag(flag: str, words: list[str], heading: str, pytestconfig) -> bool:
    if "pytest" in words or flag.startswith("--benchmark-"):
        try:
            pytestconfig.getoption(flag)
        except ValueError:
            return False
        return True
    if words[0] == "bash" and words[1:2] == ["install.sh"]:
        return flag in (REPO / "install.sh").read_text()
    command = next((cmd for key, cmd in SECTION_COMMANDS.items() if key in heading), None)
    return flag in (options_of(command) if command else every_option())


def test_readme_json_example_satisfies_the_output_schema():
    text = README.read_text()
    section = text[text.index("### JSON output") :]
    start = section.index("```json") + len("```json")
    example = section[start : section.index("\n```", start)]
    schema = json.loads((REPO / "docs" / "segment-output.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(json.loads(example))


def test_readme_links_stay_inside_the_repository():
    targets = re.findall(r"\]\(([^)#\s]+)", README.read_text())
    local = [t for t in targets if "://" not in t]
    assert local, "no relative links found"
    for target in local:
        path = (REPO / target).resolve()
        assert path.is_relative_to(REPO), f"README links outside the repository: {target}"
        assert path.exists(), f"README links to a missing file: {target}"


def test_no_text_file_refers_outside_the_repository():
    outside = ("../" + "shared", "/work/" + "shared", "parents[2] / " + '"shared"')
    suffixes = {".py", ".md", ".txt", ".cmake", ".toml", ".sh", ".cfg", ".json", ".yaml", ".yml"}
    offenders = []
    for path in REPO.rglob("*"):
        if any(
            part.startswith(".") or part in ("build", "__pycache__") for part in path.relative_to(REPO).parts
        ):
            continue
        if path.is_file() and (path.suffix in suffixes or path.name == "CMakeLists.txt"):
            text = path.read_text(errors="replace")
            offenders += [f"{path.relative_to(REPO)}: {word}" for word in outside if word in text]
    assert not offenders, offenders
