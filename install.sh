#!/usr/bin/env bash
# Install clipsam and its whole stack into the current Python 3.11 (CPU is enough; no GPU needed).
#   bash install.sh          runtime
#   bash install.sh --dev    runtime + test / benchmark / lint tools
#   bash install.sh --gpu    runtime + onnxruntime-gpu and tensorrt (NVIDIA machines)
# Every pip call installs the locked versions of constraints.txt (regenerate it with scripts/lock.sh);
# CLIPSAM_CONSTRAINTS=none installs the newest versions pyproject.toml's ranges allow (what lock.sh does).
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
CONSTRAINTS=${CLIPSAM_CONSTRAINTS:-constraints.txt}
lock=()
if [ "$CONSTRAINTS" != none ]; then lock=(-c "$CONSTRAINTS"); fi
extras=()
for arg in "$@"; do
  case "$arg" in
    --dev) extras+=(dev) ;;
    --gpu) extras+=(gpu) ;;
    *) echo "install.sh: unknown option '$arg' (use --dev and/or --gpu)" >&2; exit 2 ;;
  esac
done
# torch first, pinned: everything else builds and runs against this one torch.
"$PYTHON" -m pip install --quiet ${lock[@]+"${lock[@]}"} "torch==2.14.1" "torchvision==0.29.1" "setuptools>=68" wheel
# sam2 is an sdist whose build imports torch; building it without isolation reuses the torch above instead of
# pulling a second one, and SAM2_BUILD_CUDA=0 skips its optional CUDA extension.
SAM2_BUILD_CUDA=0 "$PYTHON" -m pip install --quiet ${lock[@]+"${lock[@]}"} --no-build-isolation "sam2==1.1.0"
target="."
if [ ${#extras[@]} -gt 0 ]; then target=".[$(IFS=,; echo "${extras[*]}")]"; fi
"$PYTHON" -m pip install --quiet ${lock[@]+"${lock[@]}"} --no-build-isolation -e "$target"
