"""Peak memory of the SAM2 mask stage against the prompt count (issue 17: it must not grow with prompts).

    python benchmarks/memory_prompts.py ARTIFACTS [--counts 128 1000 5000] [--size 1080x1920]

Each count runs in a fresh process: load the pipeline, embed the demo street scene at --size, then decode a
grid of N point prompts straight to COCO RLEs (`Pipeline.decode`, what `segment` runs) and, apart, with
dense masks (`decode_masks`, eval's vote path) for comparison. Reported per count: the process's peak RSS
after the embedding and after the decode (ru_maxrss, MB), their difference (what the decode added), the RLE
bytes and the decode time. Prints one JSON line per count.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kilobytes


def measure(artifacts: str, count: int, size: tuple[int, int], dense: bool) -> dict:
    """One count in this process: the peak RSS before and after decoding `count` prompts."""
    from clipsam.engine.bench.demo_scene import demo_scene
    from clipsam.engine.factory import load_pipeline
    from clipsam.engine.prompts import grid_prompts

    pipeline = load_pipeline(artifacts)
    image = demo_scene(*size)
    embedding = pipeline.embed(image)
    pipeline.decode(embedding, grid_prompts(*size, 4))  # sessions, workers and kernels warm
    before = peak_rss_mb()
    start = time.perf_counter()
    prompts = grid_prompts(*size, count)
    if dense:
        candidates = pipeline.decode_masks(embedding, prompts)
        output_bytes = int(candidates.masks.nbytes)
    else:
        candidates = pipeline.decode(embedding, prompts)
        output_bytes = sum(len(rle["counts"]) for rle in candidates.rles)
    seconds = time.perf_counter() - start
    after = peak_rss_mb()
    return {
        "prompts": count,
        "path": "decode_masks (dense)" if dense else "decode (RLE, streamed)",
        "image": f"{size[0]}x{size[1]}",
        "peak_rss_before_mb": round(before, 1),
        "peak_rss_after_mb": round(after, 1),
        "decode_added_mb": round(after - before, 1),
        "output_mb": round(output_bytes / 2**20, 2),
        "decode_seconds": round(seconds, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifacts")
    parser.add_argument("--counts", type=int, nargs="+", default=[128, 1000, 5000])
    parser.add_argument("--size", default="1080x1920")
    parser.add_argument("--dense", action="store_true", help="also measure decode_masks (dense masks)")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: measure one count here
    parser.add_argument("--dense-one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.lower().split("x"))
    if args.one is not None:
        print(json.dumps(measure(args.artifacts, args.one, (height, width), args.dense_one)))
        return
    for dense in (False, True) if args.dense else (False,):
        for count in args.counts:
            command = [sys.executable, __file__, args.artifacts, "--size", args.size, "--one", str(count)]
            done = subprocess.run(
                command + (["--dense-one"] if dense else []), capture_output=True, text=True
            )
            if done.returncode != 0:
                sys.exit(f"count {count} failed: {done.stderr.strip().splitlines()[-1:]}")
            print(done.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
