"""The README's Python API example runs as written, and the public names are what it promises."""

from __future__ import annotations

import os
import re
from pathlib import Path

from PIL import Image

import clipsam
from clipsam.engine.bench.demo_scene import demo_scene

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_api_example() -> str:
    section = README.read_text(encoding="utf-8").split("### Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_example_runs(artifacts, tmp_path, capsys):
    (tmp_path / "artifacts").symlink_to(artifacts)
    Image.fromarray(demo_scene(120, 160)).save(tmp_path / "street.png")
    cwd = Path.cwd()
    os.chdir(tmp_path)
    try:
        namespace: dict = {}
        exec(compile(_python_api_example(), "README.md", "exec"), namespace)  # noqa: S102 - the repo's own text
    finally:
        os.chdir(cwd)
    result = namespace["result"]
    assert isinstance(result, clipsam.SegmentationResult) and result.height == 120
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == len(result.segments) > 0
    assert all(line.split()[0] in ("car", "road", "sky") for line in printed)


def test_public_names_resolve_and_unknown_ones_fail():
    for name in clipsam.__all__:
        assert getattr(clipsam, name) is not None
    assert "onnxruntime" in clipsam.backend_names() and "torch" in clipsam.backend_names()
    try:
        clipsam.no_such_name  # noqa: B018
    except AttributeError as err:
        assert "no_such_name" in str(err)
    else:
        raise AssertionError("an unknown attribute must raise AttributeError")
