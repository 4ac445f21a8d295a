#!/usr/bin/env bash
# Regenerate constraints.txt, clipsam's lock: install into a fresh virtual environment WITHOUT the lock (the
# newest versions pyproject.toml's ranges allow today), then write what pip resolved as the new lock.
#   bash scripts/lock.sh            (PYTHON=python3.11 by default; needs the package index, ~10 GB of disk)
# Then review `git diff constraints.txt`, run `bash .ci/run` (it installs exactly the new lock), commit both.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
"$PYTHON" -m venv "$scratch/venv"
CLIPSAM_CONSTRAINTS=none PYTHON="$scratch/venv/bin/python" bash install.sh --dev
"$scratch/venv/bin/python" -m pip check
{
  sed -n '/^#/p' constraints.txt
  # --all keeps setuptools and wheel (install.sh installs them); pip itself and clipsam (editable) are not pinned.
  "$scratch/venv/bin/python" -m pip freeze --all --exclude-editable | "$scratch/venv/bin/python" -c '
import re, sys
pins = {}
for line in filter(None, map(str.strip, sys.stdin)):
    name, sep, version = line.partition("==")
    key = re.sub(r"[-_.]+", "-", name).lower()
    if not sep:
        sys.exit(f"lock.sh: cannot pin {line!r} (not a name==version requirement)")
    if key not in ("pip", "clipsam"):
        pins[key] = version
print("\n".join(f"{key}=={version}" for key, version in sorted(pins.items())))'
} > "$scratch/constraints.txt"
mv "$scratch/constraints.txt" constraints.txt
echo "wrote constraints.txt ($(grep -vc '^#' constraints.txt) pins)"
