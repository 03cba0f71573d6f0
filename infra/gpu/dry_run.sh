#!/usr/bin/env bash
# The GPU run end to end on this CPU, in an environment like the GPU image's: CPython 3.12 with only
# the image's packages (infra/gpu/image.txt's first block; PyPI's torch for 3.12 is a CUDA build,
# which runs on a CPU) in .venv-gpu/, PyAV, Ray and smart-open only from what prepare.sh carries,
# decord and boto3 nowhere. Every section's JSON must come back with status ok.
#     bash infra/gpu/dry_run.sh            (make gpu-dry-run)   ~6 GB for the venv, ~10 min the first time
# PY312: the Python 3.12 to make the venv with; TORCH: the torch to put in it (the image's version).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY312=${PY312:-$(command -v python3.12 || echo /root/.pyenv/versions/3.12.1/bin/python3)}
TORCH=${TORCH:-torch==2.11.0}
VENV=.venv-gpu
grep -qx "/$VENV/" .git/info/exclude 2>/dev/null || echo "/$VENV/" >> .git/info/exclude
if [ ! -x "$VENV/bin/python3" ]; then
    "$PY312" -m venv "$VENV"
    "$VENV/bin/python3" -m pip install -q --upgrade pip
    "$VENV/bin/python3" -m pip install -q "$TORCH" $(awk '/^# their own/{exit} !/^#/ && NF' infra/gpu/image.txt | grep -vx torch)
fi
for absent in av ray smart_open boto3 decord pytest; do
    if "$VENV/bin/python3" -c "import $absent" 2>/dev/null; then
        echo "$VENV has $absent, which the GPU image lacks: remove it ($VENV/bin/python3 -m pip uninstall $absent)" >&2
        exit 1
    fi
done
bash infra/gpu/prepare.sh
OUT=${OUT:-/tmp/posepipe-gpu-dry-run}
rm -rf "$OUT"
PATH="$PWD/$VENV/bin:$PATH" OUT="$OUT" bash infra/gpu/measure.sh --dry-run "$@"
echo "dry run: every section ok; JSON in $OUT"
