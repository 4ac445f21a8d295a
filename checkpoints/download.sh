#!/usr/bin/env bash
# Download the default checkpoints (SCLIP's CLIP ViT-B/16 and SAM2.1 tiny) into this folder, verified.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
for name in "${@:-sclip-vit-b16 sam2.1-hiera-tiny}"; do
  for model in $name; do
    clipsam download "$model" --dir "$here"
  done
done
