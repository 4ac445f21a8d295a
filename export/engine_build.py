"""The engine cache's builder: engine/models/engines.py runs `python -m clipsam.export.engine_build REQUEST`.

REQUEST is the JSON of an EngineSpec plus "out_dir" (a new folder) and "base" (a built engine of the same
weights without int8 copies, or null). With a base, its files are linked (or copied) into out_dir and only the
int8 copies are made; otherwise the whole export runs, with `--int8`'s copies when the spec asks for them.
Progress goes to stdout as "progress: …" lines; a user error ends as one "clipsam: error: …" line, exit 2.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from clipsam.engine.errors import ClipsamError
from clipsam.engine.manifest import MANIFEST_NAME

NOT_COPIED = (".verified.json", ".last_used", "optimized")


def _log(message: str) -> None:
    print(f"progress: {message}", flush=True)


def _link_base(base: Path, out_dir: Path) -> None:
    """out_dir as a copy of the base engine: graphs and text files hard-linked (copied across filesystems),
    the manifest copied (it is rewritten with the new entries)."""
    for source in sorted(base.rglob("*")):
        relative = source.relative_to(base)
        if relative.parts[0] in NOT_COPIED or source.is_dir():
            continue
        target = out_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.name == MANIFEST_NAME:
            shutil.copyfile(source, target)
            continue
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)


def build(request: dict) -> None:
    from clipsam.export.build import EXPORTABLE, ExportRequest, export_artifacts
    from clipsam.export.quantize import add_int8_graphs

    out_dir = Path(request["out_dir"])
    out_dir.mkdir(parents=True)
    if request.get("base"):
        _link_base(Path(request["base"]), out_dir)
        _log("linked the exact engine's graphs")
        add_int8_graphs(out_dir, log=_log)
        return
    clip, sam = request["clip"], request["sam"]
    seeds = {model["seed"] for model in (clip, sam) if model and model["seed"] is not None}
    assert len(seeds) <= 1, "one seed for the random models of an engine"
    export = ExportRequest(
        out_dir,
        sam_model=sam["name"] if sam else ExportRequest.sam_model,
        clip_checkpoint=Path(clip["checkpoint"]) if clip and clip["checkpoint"] else None,
        sam_checkpoint=Path(sam["checkpoint"]) if sam and sam["checkpoint"] else None,
        clip_random=bool(clip and not clip["checkpoint"]),
        sam_random=bool(sam and not sam["checkpoint"]),
        seed=seeds.pop() if seeds else 0,
        int8=bool(request["int8"]),
        models=tuple(family for family, model in zip(EXPORTABLE, (clip, sam), strict=True) if model),
    )
    export_artifacts(export, log=_log)


def main(argv: list[str]) -> int:
    try:
        build(json.loads(argv[0]))
    except ClipsamError as err:
        print(f"clipsam: error: {err}", flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
