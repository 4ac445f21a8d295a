"""Open-vocabulary text encoding: the exported text graph on onnxruntime against torch `encode_queries`.

    python benchmarks/text_encoder_timing.py [--words 4] [--rounds 5] [--threads 0]

CLIP ViT-B/16 with seeded random weights; the text tower is exported to a temp folder first (its time is
printed). Each round encodes the same new words (80 templates each) with both, interleaved, no caches (the
graph side: tokenizer + graph + template mean, `GraphTextEncoder.encode_uncached`); medians in ms and the
max abs difference of the features are printed as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from clipsam.engine.backends.onnxruntime import OrtGraph
from clipsam.engine.text.bank import OPENAI_IMAGENET_TEMPLATES, TextBank
from clipsam.engine.text.encoder import GraphTextEncoder
from clipsam.engine.text.tokenizer import ClipTokenizer
from clipsam.export.clip_model import load_sclip
from clipsam.export.onnx_text import export_text_encoder, open_clip_vocabulary_file

WORDS = ("zebra crossing", "fire hydrant", "Stephen Curry", "wind turbine", "lighthouse", "red kite")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--words", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: default)")
    args = parser.parse_args()
    words = list(WORDS[: args.words])
    model = load_sclip(None, random_weights=True, seed=0)
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        report = export_text_encoder(model, Path(folder) / "text_encoder.onnx")
        export_s = time.perf_counter() - started
        encoder = GraphTextEncoder(
            OrtGraph(Path(folder) / "text_encoder.onnx", ["CPUExecutionProvider"], args.threads or None),
            ClipTokenizer.from_file(open_clip_vocabulary_file()),
            OPENAI_IMAGENET_TEMPLATES,
            model.weights_id,
            cache=TextBank(Path(folder) / "cache"),
        )
        times = {"graph_ms": [], "torch_ms": []}
        for round_index in range(args.rounds + 1):  # round 0 warms up
            ours, graph_ms = _timed(lambda: encoder.encode_uncached(words))
            theirs, torch_ms = _timed(lambda: _torch_encode(model, words))
            if round_index:
                times["graph_ms"].append(graph_ms)
                times["torch_ms"].append(torch_ms)
    medians = {name: round(statistics.median(values), 1) for name, values in times.items()}
    record = {
        "words": len(words),
        "prompts": len(words) * len(OPENAI_IMAGENET_TEMPLATES),
        "rounds": args.rounds,
        **medians,
        "speedup": round(medians["torch_ms"] / medians["graph_ms"], 2),
        "max_abs_diff": float(np.abs(ours - theirs).max()),
        "export_seconds": round(export_s, 1),
        "export_parity": report["parity"],
        "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(record, indent=1))


def _torch_encode(model, words: list[str]) -> np.ndarray:
    with torch.inference_mode():
        return model.encode_queries(words).numpy()


def _timed(call) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    value = call()
    return value, (time.perf_counter() - start) * 1000.0


if __name__ == "__main__":
    main()
