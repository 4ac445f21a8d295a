"""Open vocabulary on exported artifacts: GraphTextEncoder equals torch `encode_queries` and the golden SCLIP
text features; its LRU, the on-disk cache and the artifacts' read-only bank are used in that order."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from clipsam.engine.backends.onnxruntime import OrtGraph
from clipsam.engine.manifest import MANIFEST_NAME, TEXT_GRAPH, ArtifactError, read_manifest, write_manifest
from clipsam.engine.text.bank import TextBank
from clipsam.engine.text.encoder import FeatureLru, GraphTextEncoder, text_encoder_from_manifest
from clipsam.export.clip_model import SclipModel, load_sclip

TOLERANCE = 1e-4
GOLDEN_QUERIES = ("background", "wall", "floor", "cat", "bicycle", "bike", "tree")
NEW_WORDS = ("zebra crossing", "Stephen Curry", "ünïcode 東京", "a, b; c!", "tree " * 30)


class CountingGraph:
    """A Backend that counts the prompts it encodes (to see which lookup layer answered)."""

    def __init__(self, graph: OrtGraph):
        self.graph = graph
        self.prompts = 0

    @property
    def output_specs(self):
        return self.graph.output_specs

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.prompts += feeds["tokens"].shape[0]
        return self.graph.run(feeds)


@pytest.fixture(scope="module")
def tiny_model(tiny_clip_checkpoint: Path) -> SclipModel:
    return load_sclip(tiny_clip_checkpoint)


def _encoder(artifacts: Path, cache_dir: Path) -> GraphTextEncoder:
    manifest = read_manifest(artifacts)

    def load(name: str) -> CountingGraph:
        return CountingGraph(OrtGraph(manifest.graph_path(name), ["CPUExecutionProvider"]))

    encoder = text_encoder_from_manifest(manifest, load, cache=TextBank(cache_dir))
    assert isinstance(encoder, GraphTextEncoder)
    return encoder


def _torch_features(model: SclipModel, queries) -> np.ndarray:
    with torch.inference_mode():
        return model.encode_queries(list(queries)).numpy()


def test_new_words_equal_torch_encode_queries(artifacts, tmp_path, tiny_model):
    encoder = _encoder(artifacts, tmp_path)
    features = encoder.encode(NEW_WORDS)
    assert features.dtype == np.float32 and features.shape == (len(NEW_WORDS), 64)
    assert np.abs(features - _torch_features(tiny_model, NEW_WORDS)).max() <= TOLERANCE
    assert encoder.graph.prompts == len(NEW_WORDS) * 80
    read_manifest(artifacts)  # nothing was written into the verified artifact folder


def test_the_text_graph_loads_only_for_a_word_no_cache_holds(artifacts, tmp_path):
    manifest, loads = read_manifest(artifacts), []

    def load(name: str) -> OrtGraph:
        loads.append(name)
        return OrtGraph(manifest.graph_path(name), ["CPUExecutionProvider"])

    encoder = text_encoder_from_manifest(manifest, load, cache=TextBank(tmp_path))
    assert encoder.encode(["sky", "car"]).shape == (2, 64)  # exported with the artifacts
    assert loads == []
    encoder.encode(["zebra"])
    encoder.encode(["okapi"])
    assert loads == ["text_encoder"]


def test_golden_sclip_text_features(artifacts, tmp_path, golden_dir):
    """The graph path alone (no bank) reproduces the SCLIP authors' text features of the golden set."""
    with np.load(golden_dir / "sclip_golden_outputs.npz") as arrays:
        golden = arrays["text_features"]
    features = _encoder(artifacts, tmp_path).encode_uncached(GOLDEN_QUERIES)
    assert np.abs(features.astype(np.float64) - golden).max() <= TOLERANCE


def test_lookup_order_lru_disk_graph(artifacts, tmp_path):
    encoder = _encoder(artifacts, tmp_path)
    first = encoder.encode(["zebra", "okapi", "zebra"])
    assert encoder.graph.prompts == 2 * 80 and len(encoder.lru) == 2
    assert len(list((tmp_path / "text").glob("*.npy"))) == 2  # written to the on-disk cache
    np.testing.assert_array_equal(encoder.encode(["okapi", "zebra"]), first[[1, 0]])
    assert encoder.graph.prompts == 2 * 80  # the LRU answered
    fresh = _encoder(artifacts, tmp_path)
    np.testing.assert_array_equal(fresh.encode(["zebra"]), first[:1])
    assert fresh.graph.prompts == 0  # the disk cache answered
    exported = fresh.encode(["car", "sky"])  # in the artifacts' own bank (the demo vocabulary)
    assert fresh.graph.prompts == 0 and exported.shape == (2, 64)


def test_other_weights_do_not_share_rows(artifacts, tmp_path):
    encoder = _encoder(artifacts, tmp_path)
    encoder.encode(["zebra"])
    other = GraphTextEncoder(
        encoder.graph, encoder.tokenizer, encoder.templates, "other-weights", cache=TextBank(tmp_path)
    )
    other.encode(["zebra"])
    assert encoder.graph.prompts == 2 * 80
    assert encoder.encode([]).shape == (0, 64)


def test_concurrent_encodes_agree_with_one_thread(artifacts, tmp_path):
    words = [["zebra", "okapi"], ["okapi", "lynx"], ["lynx", "zebra"], ["car", "okapi"]]
    vocabulary = ["zebra", "okapi", "lynx", "car"]
    expected = dict(zip(vocabulary, _encoder(artifacts, tmp_path / "one").encode(vocabulary), strict=True))
    shared = _encoder(artifacts, tmp_path / "shared")
    results: dict[int, np.ndarray] = {}

    def worker(index: int) -> None:
        results[index] = shared.encode(words[index])

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(len(words))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for index, queries in enumerate(words):
        np.testing.assert_allclose(results[index], np.stack([expected[q] for q in queries]), atol=1e-6)


def test_lru_is_bounded_and_thread_safe():
    lru = FeatureLru(max_entries=3)
    for index, query in enumerate("abcd"):
        lru.put(query, np.full(2, index, np.float32))
    assert lru.get("a") is None and len(lru) == 3
    lru.get("b")  # now the most recent: "c" goes next
    lru.put("e", np.zeros(2, np.float32))
    assert lru.get("c") is None and lru.get("b") is not None

    shared = FeatureLru(max_entries=50)

    def worker(offset: int) -> None:
        for index in range(500):
            shared.put(f"{offset}-{index % 80}", np.zeros(1, np.float32))
            shared.get(f"{offset}-{(index * 7) % 80}")

    threads = [threading.Thread(target=worker, args=(offset,)) for offset in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(shared) == 50


def _copy_folder(source: Path, target: Path) -> dict:
    """Link every entry of an artifact folder into `target`; returns the manifest record (a copy)."""
    target.mkdir()
    for path in source.iterdir():
        if path.name != MANIFEST_NAME:
            (target / path.name).symlink_to(path)
    return json.loads((source / MANIFEST_NAME).read_text())


def test_folder_without_text_graph_gives_none(artifacts, tmp_path):
    data = _copy_folder(artifacts, tmp_path / "old")
    del data["graphs"][TEXT_GRAPH]
    write_manifest(tmp_path / "old", data)
    manifest = read_manifest(tmp_path / "old")
    assert text_encoder_from_manifest(manifest, lambda name: pytest.fail(f"{name} loaded")) is None


def _with_vocabulary_entry(data: dict, **changes) -> dict:
    """The manifest record with fields of graphs.text_encoder.vocabulary_file changed."""
    graph = data["graphs"][TEXT_GRAPH]
    changed = {**graph, "vocabulary_file": {**graph["vocabulary_file"], **changes}}
    return {**data, "graphs": {**data["graphs"], TEXT_GRAPH: changed}}


def test_vocabulary_file_is_verified(artifacts, tmp_path):
    data = _copy_folder(artifacts, tmp_path / "art")
    assert data["graphs"][TEXT_GRAPH]["vocabulary_file"]["file"] == "text/bpe_simple_vocab_16e6.txt.gz"
    write_manifest(tmp_path / "art", _with_vocabulary_entry(data, sha256="0" * 64))
    with pytest.raises(ArtifactError, match="vocabulary file .* does not match its manifest"):
        read_manifest(tmp_path / "art")
    write_manifest(tmp_path / "art", _with_vocabulary_entry(data, file="../bpe.gz"))
    with pytest.raises(ArtifactError, match="vocabulary_file' names a file outside the artifact folder"):
        read_manifest(tmp_path / "art")
    write_manifest(tmp_path / "art", data)
    assert read_manifest(tmp_path / "art").graph(TEXT_GRAPH)["context_length"] == 77  # verifies again


def test_encodes_new_words_without_torch(artifacts, tmp_path):
    code = (
        "import sys\n"
        "for name in ('torch', 'open_clip', 'torchvision', 'sam2'):\n"
        "    sys.modules[name] = None\n"
        "from clipsam.engine.backends.onnxruntime import OrtGraph\n"
        "from clipsam.engine.manifest import read_manifest\n"
        "from clipsam.engine.text.encoder import text_encoder_from_manifest\n"
        f"manifest = read_manifest({str(artifacts)!r})\n"
        "encoder = text_encoder_from_manifest(manifest, lambda name: OrtGraph(manifest.graph_path(name)))\n"
        "print(encoder.encode(['zebra crossing', 'sky']).shape)\n"
    )
    env = {**os.environ, "CLIPSAM_CACHE_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(2, 64)"
    assert len(list((tmp_path / "text").glob("*.npy"))) == 1  # "sky" came from the artifacts' bank
