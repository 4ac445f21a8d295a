"""The shape of manifest.json, checked field by field before anything reads it (torch-free, no dependency).

A schema is a nested dict: {field: (types, required, sub-schema or None)}; a sub-schema under a dict whose
keys are names (graphs, text files) is given with EACH. `manifest_problem` returns the first problem as
"field 'graphs.sam2_encoder.sha256' is missing" (or None), so the refusal names the field.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from types import MappingProxyType

EACH = "*"  # the sub-schema applies to every value of a dict keyed by names
_HEX64 = re.compile(r"[0-9a-f]{64}")

_FILE_ENTRY = MappingProxyType({"bytes": (int, True, None), "sha256": (str, True, None)})
_GRAPH_ENTRY = MappingProxyType(
    {
        "file": (str, True, None),
        **_FILE_ENTRY,
        "inputs": ((list, dict), True, None),
        "outputs": ((list, dict), True, None),
    }
)
_COMPANION_ENTRY = MappingProxyType(
    {"file": (str, True, None), **_FILE_ENTRY}
)  # a file a graph needs beside it
_MODEL_ENTRY = MappingProxyType(
    {
        "name": (str, True, None),
        "weights_id": (str, True, None),
        "weights": (str, True, None),
        "seed": ((int, type(None)), False, None),
        "random_weights": (bool, False, None),
    }
)
SCHEMA = MappingProxyType(
    {
        "format": (str, True, None),
        "format_version": (int, True, None),
        "clipsam_version": (str, True, None),
        "created_unix": (int, False, None),
        "random_weights": (bool, False, None),
        "models": (dict, True, {EACH: (dict, True, _MODEL_ENTRY)}),
        "graphs": (dict, True, {EACH: (dict, True, _GRAPH_ENTRY)}),
        "text_features": (
            dict,
            False,
            {
                "dir": (str, True, None),
                "templates": (str, True, None),
                "files": (dict, True, {EACH: (dict, True, _FILE_ENTRY)}),
            },
        ),
        "versions": (dict, False, None),
        "engines": (dict, False, None),
    }
)


def manifest_problem(data: object, known_graphs: tuple[str, ...]) -> str | None:
    """The first way `data` breaks SCHEMA (or names an unknown graph, a file outside the folder, a
    malformed digest), as one phrase; None when it is well formed."""
    problem = _check(data, SCHEMA, "")
    if problem is not None:
        return problem
    for graph, entry in data["graphs"].items():
        if graph not in known_graphs:
            return f"graph 'graphs.{graph}' is not one this clipsam knows ({', '.join(known_graphs)})"
        problem = _check_file_entry(f"graphs.{graph}", entry, entry["file"])
        companion = entry.get("vocabulary_file")  # the text encoder's BPE merges file
        if problem is None and companion is not None:
            where = f"graphs.{graph}.vocabulary_file"
            problem = _check(companion, _COMPANION_ENTRY, where) or _check_file_entry(
                where, companion, companion["file"]
            )
        if problem is not None:
            return problem
    text = data.get("text_features")
    if text is not None:
        if not _inside_folder(text["dir"]):
            return f"field 'text_features.dir' ({text['dir']!r}) leaves the artifact folder"
        for name, entry in text["files"].items():
            problem = _check_file_entry(f"text_features.files.{name}", entry, name)
            if problem is not None:
                return problem
    return None


def _check(value: object, schema: dict, where: str) -> str | None:
    if not isinstance(value, dict):
        return f"field '{where or 'manifest'}' must be an object"
    if EACH in schema:
        types, _, sub = schema[EACH]
        items = [(key, value[key], types, sub) for key in value]
    else:
        missing = [key for key, (_, required, _) in schema.items() if required and key not in value]
        if missing:
            return f"field '{_join(where, missing[0])}' is missing"
        items = [(key, value[key], types, sub) for key, (types, _, sub) in schema.items() if key in value]
    for key, item, types, sub in items:
        name = _join(where, key)
        if not _has_type(item, types):
            return f"field '{name}' must be {_type_names(types)}, not {type(item).__name__}"
        if sub is not None:
            problem = _check(item, sub, name)
            if problem is not None:
                return problem
    return None


def _check_file_entry(where: str, entry: dict, relative: str) -> str | None:
    if not _inside_folder(relative):
        return f"field '{where}' names a file outside the artifact folder ({relative!r})"
    if entry["bytes"] < 0:
        return f"field '{where}.bytes' is negative"
    if not _HEX64.fullmatch(entry["sha256"]):
        return f"field '{where}.sha256' is not a sha256 hex digest"
    return None


def _inside_folder(relative: str) -> bool:
    path = PurePosixPath(relative)
    return bool(relative) and not path.is_absolute() and ".." not in path.parts and "\\" not in relative


def _has_type(value: object, types) -> bool:
    types = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool) and bool not in types:
        return False  # JSON true is not a byte count
    return isinstance(value, types)


def _type_names(types) -> str:
    types = types if isinstance(types, tuple) else (types,)
    names = {dict: "an object", list: "a list", str: "a string", int: "an integer", bool: "true or false"}
    return " or ".join(names.get(t, "null") for t in types)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key
