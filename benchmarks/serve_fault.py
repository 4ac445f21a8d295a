"""Two service figures that need a process of their own: the wall time of one `clipsam segment` process
(what every request cost before the service), and a load run during which the decoder replica is killed
(every request must end 200; a 503 is retried, as the client does).

Run:  python benchmarks/serve_fault.py DIR [--requests 20] [--kill-after 20]
(DIR from `clipsam export --out DIR --random-weights`; 480×640 generated scenes, concurrency 4.)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from PIL import Image

from clipsam.engine.bench.demo_scene import demo_scene
from clipsam.serve.config import ServeConfig, StageResources
from clipsam.serve.load import png_bytes, run_load
from clipsam.serve.runner import start_service

WORDS = ["sky", "car", "road", "tree", "grass"]
FIELDS = {"min_confidence": 0.0, "max_prompts": 32}


def process_wall_s(artifacts: Path, folder: Path) -> float:
    """Seconds of one `clipsam segment` process on a 480×640 scene (models load, kernels load, one image)."""
    image = folder / "scene.png"
    Image.fromarray(demo_scene(480, 640, seed=7)).save(image)
    words = ["-V", *WORDS, "--min-confidence", "0", "--max-prompts", "32"]
    outputs = ["--json", folder / "out.json", "-o", folder / "out.png"]
    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "clipsam",
            "segment",
            "--artifacts",
            artifacts,
            "--image",
            image,
            *words,
            *outputs,
        ],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


def kill_decoder_after(seconds: float) -> None:
    import ray

    time.sleep(seconds)
    replicas = [a for a in ray.util.list_named_actors(all_namespaces=True) if "Sam2Decoder" in a["name"]]
    ray.kill(ray.get_actor(replicas[0]["name"], namespace=replicas[0]["namespace"]), no_restart=True)
    print(f"killed {replicas[0]['name']} after {seconds:g} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifacts", type=Path)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--kill-after", type=float, default=20.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        print(
            f"clipsam segment process wall: {process_wall_s(args.artifacts, Path(folder)):.1f} s", flush=True
        )
    stage = StageResources(num_cpus=0.5)
    config = ServeConfig(str(args.artifacts.resolve()), port=8765, sclip=stage, encoder=stage, decoder=stage)
    service = start_service(config)
    try:
        bodies = [png_bytes(demo_scene(480, 640, seed=3000 + i)) for i in range(args.requests)]
        threading.Thread(target=kill_decoder_after, args=(args.kill_after,), daemon=True).start()
        run = run_load(service.url, bodies, WORDS, 4, args.requests, FIELDS)
        print(
            f"fault run: {args.requests} requests, final statuses {dict(run.statuses)}, "
            f"503 retried {run.retried}, errors {dict(run.errors)}, wall {run.wall_s:.1f} s"
        )
    finally:
        service.stop()


if __name__ == "__main__":
    main()
