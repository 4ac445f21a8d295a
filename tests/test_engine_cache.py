"""The engine by default: with neither --artifacts nor --backend, the commands run exported graphs from the
engine cache, built on first use (engine/models/engines.py).

Each test runs `clipsam` in fresh processes on a private CLIPSAM_CACHE_DIR. The full pipeline uses the tiny
golden CLIP and a seeded random SAM2.1 tiny; the cache's life cycle (concurrent first runs, a build killed
with SIGKILL, listing and clearing) uses `clipsam dense`, whose engine holds SCLIP only and exports in
seconds: the cache code is the same for every engine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from clipsam.engine.manifest import read_manifest
from clipsam.engine.models import engines as engine_cache

VOCAB = ["--vocabulary", "sky", "car", "road"]
LOW = ["--min-confidence", "0", "--min-region-size", "20", "--max-prompts", "4"]
BLOCKED = ("torch", "torchvision", "sam2", "open_clip", "clipsam.export", "clipsam.reference")
BUILD_LINE = "building the engine once"
RUN_TIMEOUT_S = 600


def _env(cache: Path) -> dict:
    return {**os.environ, "CLIPSAM_CACHE_DIR": str(cache)}


def _clipsam(args: list, cache: Path, blocked: bool = False) -> subprocess.CompletedProcess:
    """`clipsam ARGS` in a fresh process; with `blocked`, torch, sam2, open_clip and the export and
    reference code cannot be imported in it."""
    script = textwrap.dedent(
        f"""
        import importlib.abc, sys
        BLOCKED = {BLOCKED!r}
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                    raise ImportError(f"{{name}} is blocked in this test")
        if {blocked!r}:
            sys.meta_path.insert(0, Block())
        from clipsam.cli.app import main
        main(sys.argv[1:])
        """
    )
    command = [sys.executable, "-c", script, *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, env=_env(cache))


def _engines(cache: Path) -> list[str]:
    root = cache / "engines"
    return (
        sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if root.is_dir()
        else []
    )


def _leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in (cache / "engines").glob(".build-*"))


def _dense_args(tiny_clip_checkpoint: Path, street_image: Path, out: Path) -> list:
    return ["dense", "--image", street_image, *VOCAB, "--clip-checkpoint", tiny_clip_checkpoint, "--out", out]


@pytest.fixture(scope="module")
def first_segment(tmp_path_factory, tiny_clip_checkpoint: Path):
    """One `clipsam segment` with no --artifacts / --backend on an empty cache: (cache, stderr, record)."""
    from PIL import Image

    from clipsam.engine.bench.demo_scene import demo_scene

    cache = tmp_path_factory.mktemp("engine-cache")
    out = tmp_path_factory.mktemp("first")
    street_image = out / "street.png"
    Image.fromarray(demo_scene(96, 128)).save(street_image)
    args = ["segment", "--image", street_image, *VOCAB, *LOW, "--clip-checkpoint", tiny_clip_checkpoint]
    args += ["--random-weights", "--output", out / "o.png", "--json", out / "o.json"]
    done = _clipsam(args, cache)
    assert done.returncode == 0, done.stderr[-3000:]
    return cache, done.stderr, json.loads((out / "o.json").read_text()), args


def test_default_segment_builds_and_runs_the_engine(first_segment) -> None:
    cache, stderr, record, _ = first_segment
    assert stderr.count(BUILD_LINE) == 1, stderr
    assert "exported sclip_tower.onnx" in stderr and "exported sam2_encoder.onnx" in stderr  # progress
    models = record["models"]
    assert models["backend"] == "onnxruntime"  # the engine, not the torch reference
    assert _engines(cache) == [models["engine"]]
    assert Path(models["artifacts"]) == cache / "engines" / models["engine"]
    assert models["sam2"]["random_weights"] is True and models["clip"]["random_weights"] is False
    assert _leftovers(cache) == []
    read_manifest(cache / "engines" / models["engine"])  # every graph matches its sha256


def test_second_process_reuses_the_engine_without_torch(first_segment, tmp_path) -> None:
    cache, _, record, args = first_segment
    args = [*args[:-4], "--output", tmp_path / "o.png", "--json", tmp_path / "o.json"]
    done = _clipsam(args, cache, blocked=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert BUILD_LINE not in done.stderr
    again = json.loads((tmp_path / "o.json").read_text())
    assert again["models"]["engine"] == record["models"]["engine"]
    for field in ("segments", "class_names", "counts", "models"):
        assert again[field] == record[field], field
    optimized = cache / "engines" / record["models"]["engine"] / engine_cache.OPTIMIZED_DIR
    assert any(optimized.rglob("model.onnx")), "onnxruntime's optimised graphs are kept in the engine"


def test_backend_torch_still_runs_the_reference(first_segment, tmp_path) -> None:
    cache, _, record, args = first_segment
    args = [*args[:-4], "--backend", "torch", "--output", tmp_path / "o.png", "--json", tmp_path / "o.json"]
    done = _clipsam(args, cache)
    assert done.returncode == 0, done.stderr[-3000:]
    reference = json.loads((tmp_path / "o.json").read_text())
    assert reference["models"]["backend"] == "torch" and "engine" not in reference["models"]
    assert _engines(cache) == [record["models"]["engine"]]  # no second engine


def test_two_first_runs_at_once_build_one_engine(tiny_clip_checkpoint, street_image, tmp_path) -> None:
    cache = tmp_path / "cache"
    outs = [tmp_path / f"map{k}.npz" for k in range(2)]
    command = [sys.executable, "-m", "clipsam"]
    runs = [
        subprocess.Popen(
            [*command, *map(str, _dense_args(tiny_clip_checkpoint, street_image, out))],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(cache),
        )
        for out in outs
    ]
    results = [run.communicate(timeout=RUN_TIMEOUT_S) for run in runs]
    for run, (_, err) in zip(runs, results, strict=True):
        assert run.returncode == 0, err[-3000:]
    assert sum(err.count(BUILD_LINE) for _, err in results) == 1, [err for _, err in results]
    assert len(_engines(cache)) == 1 and _leftovers(cache) == []
    first, second = (np.load(out) for out in outs)
    np.testing.assert_array_equal(first["probs"], second["probs"])


def _children(pid: int) -> list[int]:
    """Every descendant pid of `pid` (from /proc: no extra dependency)."""
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        for task in Path(f"/proc/{parent}/task").glob("*/children"):
            kids = [int(k) for k in task.read_text().split()]
            found += kids
            frontier += kids
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_a_build_killed_with_sigkill_leaves_no_trusted_engine(tiny_clip_checkpoint, street_image, tmp_path):
    cache = tmp_path / "cache"
    args = [
        sys.executable,
        "-m",
        "clipsam",
        *map(str, _dense_args(tiny_clip_checkpoint, street_image, tmp_path / "m.npz")),
    ]
    run = subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env(cache)
    )
    deadline = time.monotonic() + RUN_TIMEOUT_S
    assert run.stderr is not None
    for line in run.stderr:  # the export is under way: its first graph is written
        if "exported sclip_tower.onnx" in line or time.monotonic() > deadline:
            break
    children = _children(run.pid)
    assert children, "the export runs in a child process"
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=30)
    run.stderr.close()
    end = time.monotonic() + 30
    while any(_alive(pid) for pid in children) and time.monotonic() < end:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in children), "the export child died with its parent"
    assert _engines(cache) == [], "nothing under an engine's final name"
    assert not (tmp_path / "m.npz").exists()
    done = _clipsam(_dense_args(tiny_clip_checkpoint, street_image, tmp_path / "m.npz"), cache)
    assert done.returncode == 0, done.stderr[-3000:]
    assert BUILD_LINE in done.stderr  # rebuilt, not trusted
    assert len(_engines(cache)) == 1 and _leftovers(cache) == []


def test_a_changed_graph_is_not_trusted_and_is_rebuilt(tiny_clip_checkpoint, street_image, tmp_path) -> None:
    cache = tmp_path / "cache"
    args = _dense_args(tiny_clip_checkpoint, street_image, tmp_path / "m.npz")
    assert _clipsam(args, cache).returncode == 0
    (engine,) = _engines(cache)
    folder = cache / "engines" / engine
    assert engine_cache.is_trusted(folder) and engine_cache.stamp_matches(folder)
    graph = folder / "sclip_tower.onnx"
    graph.write_bytes(graph.read_bytes()[:-1])  # truncated after the stamp was written
    assert not engine_cache.stamp_matches(folder) and not engine_cache.is_trusted(folder)
    done = _clipsam(args, cache)
    assert done.returncode == 0, done.stderr[-3000:]
    assert BUILD_LINE in done.stderr and _engines(cache) == [engine]
    read_manifest(folder)


def test_engines_lists_and_clears(tiny_clip_checkpoint, street_image, tmp_path) -> None:
    cache = tmp_path / "cache"
    assert (
        _clipsam(_dense_args(tiny_clip_checkpoint, street_image, tmp_path / "m.npz"), cache).returncode == 0
    )
    (engine,) = _engines(cache)
    listed = _clipsam(["engines"], cache, blocked=True)
    assert listed.returncode == 0, listed.stderr
    assert "sclip-vit-b16" in listed.stdout and "sha256:" in listed.stdout
    unknown = _clipsam(["engines", "--clear", "no-such-engine"], cache)
    assert unknown.returncode == 2 and unknown.stderr.strip().startswith("clipsam: error: no cached engine")
    assert len(unknown.stderr.strip().splitlines()) == 1
    cleared = _clipsam(["engines", "--clear", engine], cache)
    assert cleared.returncode == 0 and engine in cleared.stdout
    assert _engines(cache) == []


def test_the_key_covers_weights_models_and_copies(tiny_clip_checkpoint, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CLIPSAM_CACHE_DIR", str(tmp_path))
    tiny = engine_cache.model_weights("sclip-vit-b16", tiny_clip_checkpoint, 0)
    sam = engine_cache.model_weights("sam2.1-hiera-tiny", None, 0)
    base = engine_cache.EngineSpec(tiny, sam)
    assert tiny.weights == f"sha256:{engine_cache.file_digest(tiny_clip_checkpoint)}"
    copied = tmp_path / "same.pt"
    copied.write_bytes(tiny_clip_checkpoint.read_bytes())
    assert (
        engine_cache.EngineSpec(engine_cache.model_weights("sclip-vit-b16", copied, 0), sam).key == base.key
    )
    others = [
        engine_cache.EngineSpec(tiny, engine_cache.model_weights("sam2.1-hiera-tiny", None, 1)),
        engine_cache.EngineSpec(tiny, engine_cache.model_weights("sam2.1-hiera-small", None, 0)),
        engine_cache.EngineSpec(tiny, sam, int8=True),
        engine_cache.EngineSpec(tiny, None),
    ]
    assert len({spec.key for spec in others} | {base.key}) == 5


@pytest.mark.parametrize("graph", ["sclip_tower", "sam2_encoder", "sam2_fast_decoder"])
def test_saved_optimised_graph_gives_the_sessions_outputs(tiny_artifacts: Path, tmp_path, graph) -> None:
    """onnxruntime's saved optimised form (engine/backends/onnxruntime.py) against a session of the exported
    graph itself, on the same seeded inputs: the first session saves it, the second loads it."""
    from clipsam.engine.backends.onnxruntime import OPTIMIZED_MODEL, OrtGraph

    manifest = read_manifest(tiny_artifacts)
    path = manifest.graph_path(graph)
    plain = OrtGraph(path, ["CPUExecutionProvider"])
    folder = tmp_path / "optimized" / graph
    saving = OrtGraph(path, ["CPUExecutionProvider"], optimized=folder)
    assert (folder / OPTIMIZED_MODEL).is_file()
    loaded = OrtGraph(path, ["CPUExecutionProvider"], optimized=folder)
    rng = np.random.default_rng(0)
    feeds = {}
    for spec in plain.input_specs:
        shape = [dim if isinstance(dim, int) else 2 for dim in spec.shape]
        if spec.dtype == "float32":
            feeds[spec.name] = rng.standard_normal(shape).astype(np.float32)
        else:
            feeds[spec.name] = np.ones(shape, spec.dtype)
    expected = plain.run(feeds)
    for session in (saving, loaded):
        got = session.run(feeds)
        for name, value in expected.items():
            np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-5, err_msg=name)
