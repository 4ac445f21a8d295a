#!/usr/bin/env bash
# One-shot GPU check for an NVIDIA machine without network (about 10 minutes at most):
#   installs clipsam offline from wheels, exports random-weight artifacts (SCLIP ViT-B/16 + SAM2.1 tiny),
#   verifies them, checks TensorRT readiness, times the CUDA path (onnxruntime CUDA EP when onnxruntime-gpu is
#   present, else the torch CUDA reference), builds and times TensorRT engines when tensorrt is importable, and
#   writes every number with the GPU's name and the library versions to a JSON file.
#
#   benchmarks/gpu_check.sh [WHEEL_DIR (default ./wheels)] [OUT_JSON (default gpu_check.json)]
#
# Needs torch, onnx and onnxruntime already installed; every other dependency (and optionally onnxruntime-gpu,
# tensorrt, cuda-python) as wheels in WHEEL_DIR.
set -euo pipefail

WHEELS="${1:-./wheels}"
OUT_JSON="$(realpath -m "${2:-gpu_check.json}")"
REPO="$(cd "$(dirname "$0")/.." && pwd)"
WORK="$(mktemp -d -t clipsam-gpu-XXXX)"
ART="$WORK/artifacts"
PY="${PYTHON:-python3}"
export CLIPSAM_CACHE_DIR="$WORK/cache"
STEPS="$WORK/steps.tsv"
: >"$STEPS"

step() {  # step NAME TIMEOUT_S COMMAND...: run, time, record "name<TAB>seconds<TAB>exit code"
  local name="$1" limit="$2"
  shift 2
  local start end code=0
  start=$(date +%s%N)
  timeout "$limit" "$@" >"$WORK/$name.log" 2>&1 || code=$?
  end=$(date +%s%N)
  local ms=$(((end - start) / 1000000))
  printf '%s\t%d.%03d\t%d\n' "$name" $((ms / 1000)) $((ms % 1000)) "$code" >>"$STEPS"
  echo "[$name] exit $code in $((ms / 1000)) s (log: $WORK/$name.log)"
  return 0
}

command -v nvidia-smi >/dev/null || { echo "nvidia-smi not found: this script needs an NVIDIA GPU" >&2; exit 2; }
[ -d "$WHEELS" ] || { echo "wheel folder '$WHEELS' not found (pass it as the first argument)" >&2; exit 2; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$WORK/gpu.txt"

step install 120 "$PY" -m pip install --no-index --find-links "$WHEELS" "$REPO"
for optional in onnxruntime-gpu tensorrt cuda-python; do
  if ls "$WHEELS" | grep -qi "^${optional//-/[-_]}"; then
    step "install-$optional" 120 "$PY" -m pip install --no-index --find-links "$WHEELS" "$optional"
  fi
done
step export 240 "$PY" -m clipsam export --out "$ART" --random-weights --seed 0
step verify 150 "$PY" -m clipsam verify "$ART"
step timings 240 "$PY" - "$ART" "$WORK/timings.json" <<'PYTHON'
"""CUDA-path timings: onnxruntime CUDA EP, else torch CUDA; then TensorRT engines when tensorrt imports."""
import json
import sys
import time
from pathlib import Path

import numpy as np

art, out = Path(sys.argv[1]), Path(sys.argv[2])
record = {"prompts": 64}


def timed(fn, repeat=10):
    fn()  # warm-up (engine/provider initialisation, cudnn autotuning)
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return round((time.perf_counter() - start) / repeat * 1000, 2)


def decoder_feeds(n):
    rng = np.random.default_rng(0)
    return {
        "image_embed": rng.standard_normal((1, 256, 64, 64), dtype=np.float32),
        "high_res_feats_0": rng.standard_normal((1, 32, 256, 256), dtype=np.float32),
        "high_res_feats_1": rng.standard_normal((1, 64, 128, 128), dtype=np.float32),
        "point_coords": rng.uniform(0, 1024, (n, 1, 2)).astype(np.float32),
        "point_labels": np.ones((n, 1), np.int32),
        "mask_input": np.zeros((n, 1, 256, 256), np.float32),
        "has_mask_input": np.zeros(n, np.float32),
    }


image = {"image": np.random.default_rng(1).standard_normal((1, 3, 1024, 1024), dtype=np.float32)}
crops = {"crops": np.random.default_rng(2).standard_normal((8, 3, 224, 224), dtype=np.float32)}
feeds = {"sam2_encoder": image, "sam2_decoder": decoder_feeds(64), "sclip_tower": crops}

from clipsam.export.trt_readiness import check_artifacts  # noqa: E402

readiness = check_artifacts(art)
record["trt_readiness"] = readiness.text()

import onnxruntime as ort  # noqa: E402

from clipsam.engine.backends.onnxruntime import OrtGraph  # noqa: E402
from clipsam.engine.manifest import read_manifest  # noqa: E402

manifest = read_manifest(art)
record["onnxruntime"] = {"version": ort.__version__, "providers": ort.get_available_providers()}
for provider in ("CUDAExecutionProvider", "CPUExecutionProvider"):
    if provider not in ort.get_available_providers():
        continue
    graphs = {name: OrtGraph(manifest.graph_path(name), [provider]) for name in feeds}
    record[f"ort_{provider}_ms"] = {name: timed(lambda g=g, f=feeds[name]: g.run(f)) for name, g in graphs.items()}

if "CUDAExecutionProvider" not in ort.get_available_providers():
    import torch

    from clipsam.export.sam2_model import build_sam2_model

    sam = build_sam2_model("sam2.1-hiera-tiny", random_weights=True, seed=0).module.cuda().eval()
    x = torch.from_numpy(image["image"]).cuda()

    def encode():
        with torch.inference_mode():
            sam.image_encoder(x)
        torch.cuda.synchronize()

    record["torch_cuda_ms"] = {"sam2_image_encoder": timed(encode), "torch": torch.__version__}

try:
    import tensorrt
except ImportError:
    record["tensorrt"] = "not installed: engines not built"
else:
    from clipsam.engine.backends.tensorrt import TrtGraph, engine_entry
    from clipsam.export.trt_build import build_engines

    start = time.perf_counter()
    section = build_engines(art, workspace_gib=4.0)
    record["tensorrt"] = {"version": tensorrt.__version__, "build_s": round(time.perf_counter() - start, 1)}
    manifest = read_manifest(art)
    engines = {name: TrtGraph(art / section["graphs"][name]["file"], engine_entry(manifest, name)) for name in feeds}
    record["trt_fp16_ms"] = {name: timed(lambda g=g, f=feeds[name]: g.run(f)) for name, g in engines.items()}
    ours = engines["sam2_decoder"].run(feeds["sam2_decoder"])["low_res_masks"]
    ref = OrtGraph(manifest.graph_path("sam2_decoder"), ["CPUExecutionProvider"]).run(feeds["sam2_decoder"])
    record["trt_decoder_sign_agreement"] = float(np.mean((ours > 0) == (ref["low_res_masks"] > 0)))

out.write_text(json.dumps(record, indent=1))
PYTHON

"$PY" - "$STEPS" "$WORK" "$OUT_JSON" <<'PYTHON'
import json
import platform
import sys
from pathlib import Path

steps_file, work, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
steps = {}
for line in steps_file.read_text().splitlines():
    name, seconds, code = line.split("\t")
    steps[name] = {"seconds": float(seconds), "exit_code": int(code)}
timings = work / "timings.json"
record = {
    "gpu": (work / "gpu.txt").read_text().strip(),
    "python": platform.python_version(),
    "steps": steps,
    "timings": json.loads(timings.read_text()) if timings.is_file() else None,
    "logs": str(work),
}
out.write_text(json.dumps(record, indent=1))
print(f"wrote {out}")
failed = [name for name, step in steps.items() if step["exit_code"] != 0]
sys.exit(1 if failed else 0)
PYTHON
