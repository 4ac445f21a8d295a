"""The model stages as Ray Serve deployments: thin wrappers that add resources, an image cache, decoder
batching and readiness around the Pipeline's public stage methods (the pipeline itself is not copied here).

Each replica builds its own Pipeline from the artifacts and is warm before Serve routes to it: every graph
ran once and every numba kernel is compiled in the constructor.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field

import numpy as np
from ray import serve

from clipsam.engine.pipeline import has_background
from clipsam.serve.batching import concat_prompts, group_keys, split_candidates
from clipsam.serve.cache import ByteLru
from clipsam.serve.config import ServeConfig

WARM_VOCABULARY = ("sky", "car", "road", "tree", "grass")  # words every export embeds (DEMO_VOCABULARY)


@dataclass(frozen=True)
class StageReply:
    """A stage's output with what the service reports about it: milliseconds per stage (the segment JSON's
    timings_ms keys), whether the image cache held the encoder output, and which node / replica ran it."""

    value: object
    timings_ms: dict
    cache_hit: bool | None = None
    where: dict = field(default_factory=dict)


def build_pipeline(config: ServeConfig):
    """The replica's Pipeline on the service's artifacts (`clipsam.load_pipeline`)."""
    from clipsam import load_pipeline

    options = {"backend": config.backend, "precision": config.precision}
    if config.providers != "auto":
        options["providers"] = config.providers
    return load_pipeline(artifacts=config.artifacts, **options)


def replica_location(stage: str) -> dict:
    """{"stage", "node", "replica", "pid"} of the running replica (for readiness and tracing)."""
    import ray

    context = serve.get_replica_context()
    return {
        "stage": stage,
        "node": ray.get_runtime_context().get_node_id(),
        "replica": context.replica_tag if hasattr(context, "replica_tag") else str(context.replica_id),
        "pid": os.getpid(),
    }


def warm_image() -> np.ndarray:
    """A small synthetic street scene for the warm-up runs."""
    from clipsam.engine.bench.demo_scene import demo_scene

    return demo_scene(120, 160)


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


class _Stage:
    """Pipeline + warm state shared by the stage deployments."""

    name = "stage"

    def __init__(self, config: ServeConfig):
        from clipsam import kernels

        start = time.perf_counter()
        self.config = config
        self.pipeline = build_pipeline(config)
        kernels.warmup()
        self.warm()
        self.warmup_s = time.perf_counter() - start

    def warm(self) -> None:
        raise NotImplementedError

    def ready(self) -> dict:
        """This replica's readiness record (it exists only once the constructor has warmed it)."""
        return {**replica_location(self.name), "warm": True, "warmup_s": round(self.warmup_s, 3)}

    def models(self) -> dict:
        """The segment JSON's "models" record and whether any model has random weights."""
        return {"models": self.pipeline.models, "random_weights": bool(self.pipeline.random_weights)}


@serve.deployment(name="SclipStage")
class SclipStage(_Stage):
    """SCLIP: text features, patch features (cached per image), dense map, and the prompts of a segment."""

    name = "sclip"

    def __init__(self, config: ServeConfig):
        self.cache = ByteLru(config.cache_bytes)
        super().__init__(config)

    def warm(self) -> None:
        from clipsam import SegmentOptions, vocabulary_from_words

        vocabulary = vocabulary_from_words(list(WARM_VOCABULARY))
        dense = self.pipeline.dense(warm_image(), vocabulary, None)
        self.pipeline.prompts(dense, SegmentOptions(), background=False)

    def dense(self, key: str, image: np.ndarray, vocabulary) -> StageReply:
        """DenseMap of uint8 [H, W, 3] `image` (content hash `key`) for `vocabulary`; timings "text" and
        "sclip"."""
        timings = {}
        start = time.perf_counter()
        text = self.pipeline.text(vocabulary)
        timings["text"] = _ms(start)
        start = time.perf_counter()
        features = self.cache.get(key)
        hit = features is not None
        if not hit:
            features = self.pipeline.features(image, None)
            self.cache.put(key, features)
        dense = self.pipeline.dense_map(features, text, None)
        timings["sclip"] = _ms(start)
        return StageReply(dense, timings, hit, replica_location(self.name))

    def prompts(self, key: str, image: np.ndarray, vocabulary, options) -> StageReply:
        """The segment's prompts (Prompts, image frame); timings "text", "sclip", "prompts"."""
        reply = self.dense(key, image, vocabulary)
        start = time.perf_counter()
        prompts = self.pipeline.prompts(reply.value, options, background=has_background(vocabulary))
        timings = {**reply.timings_ms, "prompts": _ms(start)}
        return StageReply(prompts, timings, reply.cache_hit, reply.where)

    def cache_stats(self) -> dict:
        return self.cache.stats()


@serve.deployment(name="Sam2Encoder")
class Sam2Encoder(_Stage):
    """SAM2's image encoder; ImageEmbeddings cached per image content hash, and concurrent requests for the
    same image share one encoder run."""

    name = "encoder"

    def __init__(self, config: ServeConfig):
        self.cache = ByteLru(config.cache_bytes)
        self._running: dict[str, asyncio.Future] = {}
        super().__init__(config)

    def warm(self) -> None:
        self.pipeline.embed(warm_image())

    async def embed(self, key: str, image: np.ndarray) -> StageReply:
        """ImageEmbedding of uint8 [H, W, 3] `image`; timing "sam2_encoder". cache_hit: this request did
        not run the encoder (the cache held the embedding, or another request was computing it)."""
        start = time.perf_counter()
        embedding = self.cache.get(key)
        hit = embedding is not None
        if not hit:
            running = self._running.get(key)
            hit = running is not None
            if running is None:
                running = asyncio.ensure_future(asyncio.to_thread(self.pipeline.embed, image))
                self._running[key] = running
                running.add_done_callback(lambda done: self._finished(key, done))
            embedding = await asyncio.shield(running)
        return StageReply(embedding, {"sam2_encoder": _ms(start)}, hit, replica_location(self.name))

    def _finished(self, key: str, done: asyncio.Future) -> None:
        self._running.pop(key, None)
        if not done.cancelled() and done.exception() is None:
            self.cache.put(key, done.result())

    def cache_stats(self) -> dict:
        return self.cache.stats()


@serve.deployment(name="Sam2Decoder")
class Sam2Decoder(_Stage):
    """SAM2's decoder and the merge. Concurrent requests are batched (`@serve.batch`); within a batch, the
    prompts of requests on the same image go to ONE decode call."""

    name = "decoder"

    def __init__(self, config: ServeConfig):
        super().__init__(config)
        self._decode_batch.set_max_batch_size(config.decoder_batch_size)
        self._decode_batch.set_batch_wait_timeout_s(config.decoder_batch_wait_s)

    def warm(self) -> None:
        from clipsam import SegmentOptions, vocabulary_from_words

        vocabulary = vocabulary_from_words(list(WARM_VOCABULARY))
        result = self.pipeline.segment(
            warm_image(), vocabulary, SegmentOptions(min_confidence=0.0, min_region_size=0)
        )
        assert result.counts["prompts"] > 0, "the decoder warm-up needs prompts"

    async def segment(
        self, encoded: StageReply, prompts, options, class_names: tuple, key: str
    ) -> StageReply:
        """Masks of `prompts` (image frame) on the image embedded in `encoded`, merged into Segments.

        timings: "sam2_encoder" (carried from the encoder), "sam2_decoder" (the batched decode call this
        request was part of), "merge".
        """
        candidates, decode_ms, batch = await self._decode_batch(
            encoded.value, prompts, options.use_boxes, key
        )
        start = time.perf_counter()
        segments = await asyncio.to_thread(self.pipeline.merge, candidates, options, class_names)
        timings = {**encoded.timings_ms, "sam2_decoder": decode_ms, "merge": _ms(start)}
        where = {**replica_location(self.name), "batch_requests": batch}
        return StageReply(segments, timings, encoded.cache_hit, where)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
    async def _decode_batch(self, embeddings: list, prompts: list, use_boxes: list, keys: list) -> list:
        """Per request (RleCandidates, decode ms, requests in the batch); one decode per image group."""
        replies = [None] * len(keys)
        for members in group_keys(keys, use_boxes, prompts):
            first = members[0]
            group_prompts = concat_prompts([prompts[i] for i in members])
            start = time.perf_counter()
            candidates = await asyncio.to_thread(
                self.pipeline.decode, embeddings[first], group_prompts, use_boxes=use_boxes[first]
            )
            elapsed = _ms(start)
            parts = split_candidates(candidates, [len(prompts[i]) for i in members])
            for index, part in zip(members, parts, strict=True):
                replies[index] = (part, elapsed, len(keys))
        return replies
