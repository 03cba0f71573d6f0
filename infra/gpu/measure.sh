#!/usr/bin/env bash
# The one GPU run. ON THE GPU MACHINE (one H100/H200, 16 vCPUs, its image's python3 with CUDA torch,
# no network), after infra/gpu/prepare.sh here:
#     run(command='bash infra/gpu/measure.sh', carry=['.gpu'], timeout_s=600)
# Sections, each with its own timeout, each writing $OUT/<section>.json as it measures (8 minutes in all):
#   0_env     versions, GPU and clocks, NVDEC libraries, the crop probes the device path relies on
#   1_parity  the CUDA tests; the device path against the reference path, fp16 and --no-half
#   2_floors  each network alone on device tensors: eager and CUDA-graph replay, two batch sizes
#   3_worker  one worker on the device path: 720p H.264 (encoded there) and the street clip, windows 8
#             and 32: frames/s, host ms per frame, kernels and GPU ms per stage, fallback windows
#   4_decode  decoding alone with 1, 4 and 8 threads
#   5_node    2, 3 and 4 workers with finishers on the runner's plan (Ray carried; processes if it fails)
# plus $OUT/measure.log (everything the sections printed). infra/gpu/measure.py says more.
#
# HERE, the same script on a CPU with tiny sizes (OUT set or /tmp/posepipe-gpu-out):
#     bash infra/gpu/measure.sh --dry-run
# PYTHON picks the interpreter (default python3). The carried packages (.gpu/site.tar.xz: PyAV, Ray
# and what they need beyond the image) are unpacked into a scratch folder and put on PYTHONPATH ahead
# of the image's; without them (CI), what PYTHON can import is used.
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
CARRY=${POSEPIPE_GPU_CARRY:-.gpu}   # what prepare.sh made (a folder that is not there: carry nothing)
OUT=${OUT:-/tmp/posepipe-gpu-out}
mkdir -p "$OUT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/posepipe-gpu.XXXXXX") || exit 1
trap 'rm -rf "$WORK"' EXIT
export PYTHONUNBUFFERED=1 OMP_WAIT_POLICY=PASSIVE
[ -d "$CARRY/shared" ] && export POSEPIPE_SHARED="$(cd "$CARRY/shared" && pwd)"
[ -f "$CARRY/MANIFEST.json" ] && export POSEPIPE_GPU_CARRIED="$(cd "$CARRY" && pwd)/MANIFEST.json"

path="$WORK/pp"
if [ -f "$CARRY/site.tar.xz" ]; then
    mkdir -p "$WORK/site"
    t0=$(date +%s)
    if command -v xz >/dev/null; then
        tar -xJf "$CARRY/site.tar.xz" -C "$WORK/site" || exit 1
    else
        "$PY" -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" "$CARRY/site.tar.xz" "$WORK/site" || exit 1
    fi
    echo "carried packages unpacked in $(( $(date +%s) - t0 )) s"
    path="$path:$WORK/site"
    # pytest only where the image has none (the image's own, with its plugins, is preferred)
    if [ -d "$WORK/site/.fallback" ] && ! "$PY" -c "import pytest" 2>/dev/null; then
        fallback="$WORK/site/.fallback"
    fi
else
    echo "no $CARRY/site.tar.xz (infra/gpu/prepare.sh makes it): using what $PY can import" >&2
fi
# posepipe's three folders under their import name, without installing (no build tools there)
mkdir -p "$WORK/pp/posepipe"
for p in models pipeline jobs; do ln -s "$PWD/$p" "$WORK/pp/posepipe/$p"; done
export PYTHONPATH="$path:$PWD${PYTHONPATH:+:$PYTHONPATH}${fallback:+:$fallback}"

"$PY" infra/gpu/measure.py --out "$OUT" --work "$WORK" "$@"
