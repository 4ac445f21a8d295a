"""Open vocabulary on exported graphs: any query word -> SCLIP text features, torch-free.

A query's features are the mean over the prompt templates of the L2-normalised text-tower features of each
filled template, normalised again (SclipModel.encode_queries in torch). Lookup order, first hit wins: an
in-process LRU, the artifacts' exported text bank (read only: that folder is verified against its manifest),
the on-disk feature cache (TextBank, keyed by weights, query and templates), and last the text graph
(`text_encoder.onnx`), whose rows are then written to the on-disk cache and the LRU.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

import numpy as np

from clipsam.engine.backends.base import Backend
from clipsam.engine.manifest import TEXT_GRAPH, ArtifactError, Manifest
from clipsam.engine.text.bank import OPENAI_IMAGENET_TEMPLATES, TextBank

if TYPE_CHECKING:
    from clipsam.engine.text.tokenizer import ClipTokenizer

TEMPLATE_SETS = MappingProxyType(
    {"openai-imagenet-80": OPENAI_IMAGENET_TEMPLATES}
)  # the manifest's text_features.templates
TEXT_BATCH = 256  # prompts per graph call (as in the torch encoder)
LRU_ENTRIES = 4096  # query rows kept in memory per encoder (a ViT-B/16 row is 2 KiB)


class FeatureLru:
    """A thread-safe LRU of float32 [D] feature rows by query, bounded by its number of entries."""

    def __init__(self, max_entries: int = LRU_ENTRIES):
        assert max_entries > 0, max_entries
        self.max_entries = max_entries
        self._rows: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, query: str) -> np.ndarray | None:
        with self._lock:
            row = self._rows.get(query)
            if row is not None:
                self._rows.move_to_end(query)
            return row

    def put(self, query: str, row: np.ndarray) -> None:
        with self._lock:
            self._rows[query] = row
            self._rows.move_to_end(query)
            while len(self._rows) > self.max_entries:
                self._rows.popitem(last=False)


class LazyGraph:
    """A Backend that loads its graph on first use (thread-safe): the ~250 MB ViT-B/16 text tower costs a
    pipeline nothing while every word it is asked for is cached. Other attributes reach the loaded graph."""

    def __init__(self, load: Callable[[], Backend]):
        self._load = load
        self._graph: Backend | None = None
        self._lock = threading.Lock()

    def loaded(self) -> Backend:
        with self._lock:
            if self._graph is None:
                self._graph = self._load()
            return self._graph

    @property
    def is_loaded(self) -> bool:
        return self._graph is not None

    @property
    def input_specs(self):
        return self.loaded().input_specs

    @property
    def output_specs(self):
        return self.loaded().output_specs

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.loaded().run(feeds)

    def __getattr__(self, name: str):
        if name.startswith("_"):  # not yet set (copying, unpickling): never load for those
            raise AttributeError(name)
        return getattr(self.loaded(), name)


class LazyTokenizer:
    """CLIP's BPE tokenizer read from its vocabulary file on first use (thread-safe): reading the 49k merges
    costs a process about half a second, and a pipeline whose words are all cached never tokenises."""

    def __init__(self, vocabulary_file: Path, context_length: int):
        self.vocabulary_file = Path(vocabulary_file)
        self.context_length = context_length
        self._tokenizer: ClipTokenizer | None = None
        self._lock = threading.Lock()

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            if self._tokenizer is None:
                from clipsam.engine.text.tokenizer import ClipTokenizer

                self._tokenizer = ClipTokenizer.from_file(self.vocabulary_file, self.context_length)
        return self._tokenizer(texts)


class GraphTextEncoder:
    """SCLIP text features from the text graph (any Backend), behind the LRU and the feature caches.

    graph: `text_encoder.onnx` (tokens int32 [N, L] -> text_features float32 [N, D], normalised).
    cache: the on-disk feature cache (default: TextBank() in the clipsam cache folder, with `templates`).
    exported: the artifacts' own text bank, read only (None: no such layer).
    """

    def __init__(
        self,
        graph: Backend,
        tokenizer: Callable[[Sequence[str]], np.ndarray],
        templates: Sequence[str],
        weights_id: str,
        *,
        cache: TextBank | None = None,
        exported: TextBank | None = None,
        lru_entries: int = LRU_ENTRIES,
    ):
        self.graph = graph
        self.tokenizer = tokenizer
        self.templates = tuple(templates)
        self.weights_id = weights_id
        self.cache = cache if cache is not None else TextBank(templates=self.templates)
        self.exported = exported
        for bank in (self.cache, exported):
            assert bank is None or bank.templates == self.templates, "a bank keyed by other templates"
        self.lru = FeatureLru(lru_entries)

    @property
    def embed_dim(self) -> int:
        return int(self.graph.output_specs[0].shape[-1])

    def encode(self, queries: Sequence[str]) -> np.ndarray:
        """float32 [Q, D] L2-normalised features of `queries` (cached layers first, see the module doc)."""
        rows = {query: self.lru.get(query) for query in queries}
        missing = [query for query, row in rows.items() if row is None]
        if self.exported is not None:
            for query in missing:
                rows[query] = self.exported.lookup(self.weights_id, query)
            missing = [query for query in missing if rows[query] is None]
        if missing:
            encoded = self.cache.get(self.weights_id, missing, self.encode_uncached)
            rows.update(zip(missing, encoded, strict=True))
        for query in rows:
            self.lru.put(query, rows[query])
        if not queries:
            return np.zeros((0, self.embed_dim), np.float32)
        return np.stack([rows[query] for query in queries])

    def encode_uncached(self, queries: Sequence[str]) -> np.ndarray:
        """float32 [Q, D] from the graph alone: every template filled with every query, tokenised, encoded in
        batches of similar length (each cut after its longest EOT), averaged per query, renormalised."""
        prompts = [template.format(query) for query in queries for template in self.templates]
        tokens = self.tokenizer(prompts)  # int32 [Q*T, ctx]
        lengths = tokens.argmax(axis=1) + 1  # [Q*T]: through the EOT token, the largest id of a row
        order = np.argsort(lengths, kind="stable")
        features = np.empty((len(prompts), self.embed_dim), np.float32)
        for start in range(0, len(prompts), TEXT_BATCH):
            batch = order[start : start + TEXT_BATCH]
            fed = np.ascontiguousarray(tokens[batch, : int(lengths[batch].max())])  # [n, L]
            features[batch] = self.graph.run({"tokens": fed})["text_features"]
        mean = features.reshape(len(queries), len(self.templates), -1).mean(axis=1)  # [Q, D]
        return (mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def text_encoder_from_manifest(
    manifest: Manifest,
    load_graph: Callable[[str], Backend],
    *,
    cache: TextBank | None = None,
    lru_entries: int = LRU_ENTRIES,
) -> GraphTextEncoder | None:
    """The open-vocabulary encoder of an artifact folder, or None when it has no text graph (exports made
    before the text graph existed, or `--only sam2`). load_graph(name) -> Backend loads one manifest graph."""
    if TEXT_GRAPH not in manifest.graph_names or not manifest.has_model("sclip"):
        return None
    entry = manifest.graph(TEXT_GRAPH)
    template_set = manifest.data["text_features"]["templates"]
    if template_set not in TEMPLATE_SETS:
        raise ArtifactError(f"'{manifest.directory}' names unknown prompt templates '{template_set}'")
    templates = TEMPLATE_SETS[template_set]
    tokenizer = LazyTokenizer(
        manifest.directory / entry["vocabulary_file"]["file"], int(entry["context_length"])
    )
    return GraphTextEncoder(
        LazyGraph(lambda: load_graph(TEXT_GRAPH)),
        tokenizer,
        templates,
        manifest.clip_weights_id,
        cache=cache if cache is not None else TextBank(templates=templates),
        exported=TextBank(manifest.text_dir, templates),
        lru_entries=lru_entries,
    )
