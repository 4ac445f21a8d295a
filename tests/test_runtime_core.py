"""The runtime is torch-free and stateless at module level.

- Every module of clipsam.engine (core, backends, eval, bench, edit) imports in a process where torch,
  torchvision, sam2, open_clip, diffusers, clipsam.export and clipsam.reference cannot be imported: the torch
  reference is reached only through the backend registry, when a user asks for it.
- No runtime module holds mutable state at module level (dicts, lists, sets, caches): constants are tuples,
  frozensets or read-only mappings, so concurrent pipelines cannot leak into each other.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys
import textwrap
from types import ModuleType

import pytest

import clipsam.engine

BLOCKED = ("torch", "torchvision", "sam2", "open_clip", "diffusers", "clipsam.export", "clipsam.reference")
RUNTIME_PACKAGES = ("clipsam.engine", "clipsam.engine.backends", "clipsam.engine.text")


def _engine_modules() -> list[str]:
    return sorted(
        info.name for info in pkgutil.walk_packages(clipsam.engine.__path__, prefix="clipsam.engine.")
    )


def test_every_engine_module_imports_without_torch_or_export_code() -> None:
    modules = _engine_modules()
    assert "clipsam.engine.pipeline" in modules and "clipsam.engine.eval.modes" in modules
    script = textwrap.dedent(
        f"""
        import importlib, importlib.abc, json, sys
        BLOCKED = {BLOCKED!r}
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                    raise ImportError(f"{{name}} is blocked in this test")
        sys.meta_path.insert(0, Block())
        for name in {modules!r}:
            importlib.import_module(name)
        import clipsam
        for name in clipsam.__all__:
            getattr(clipsam, name)
        loaded = [m for m in sys.modules if any(m == b or m.startswith(b + ".") for b in BLOCKED)]
        print(json.dumps(sorted(loaded)))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_the_block_catches_a_torch_import() -> None:
    """The blocking above is effective: a module that imports the reference fails under it."""
    script = textwrap.dedent(
        f"""
        import importlib.abc, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if any(name == b or name.startswith(b + ".") for b in {BLOCKED!r}):
                    raise ImportError(name)
        sys.meta_path.insert(0, Block())
        from clipsam.engine.factory import load_reference_pipeline
        load_reference_pipeline()
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "ImportError" in done.stderr


def _mutable_globals(module: ModuleType) -> list[str]:
    found = []
    for name, value in vars(module).items():
        if name.startswith("__"):
            continue
        if isinstance(value, (dict, list, set, bytearray)):
            found.append(f"{name}: {type(value).__name__}")
        elif hasattr(value, "cache_info") and getattr(value, "__module__", "") == module.__name__:
            found.append(f"{name}: lru_cache")
    return found


@pytest.mark.parametrize(
    "name", [m for m in _engine_modules() if m.rsplit(".", 1)[0] in RUNTIME_PACKAGES or m in RUNTIME_PACKAGES]
)
def test_no_module_level_mutable_state(name: str) -> None:
    assert _mutable_globals(importlib.import_module(name)) == []


def test_the_state_check_catches_a_dict() -> None:
    sample = ModuleType("sample")
    sample.TABLE = {"a": 1}
    sample.NAMES = ("a",)
    assert _mutable_globals(sample) == ["TABLE: dict"]
