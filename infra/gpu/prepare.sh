#!/usr/bin/env bash
# Run HERE (PyPI reachable) before the GPU run: puts into .gpu/ (git-ignored; the device call names it
# in carry) what the GPU machine lacks, and checks that everything that travels fits the device
# tool's 64 MiB:
#   .gpu/site.tar.xz   PyAV, Ray, smart-open and their dependencies that the image lacks (carry.txt
#                      minus image.txt), installed for CPython 3.12 manylinux x86-64 as pip installs
#                      them, slimmed (Ray's Java, web UI and libraries), ELF symbols stripped, xz'd:
#                      about 40 MiB instead of 130 as wheels. pytest rides along in .fallback/, used
#                      only where the image has none.
#   .gpu/shared/       the golden vectors the CUDA tests read, and the first 384 frames of vtest.avi
#                      (its packets copied) as the street clip.
#   .gpu/MANIFEST.json what is carried, at which versions (section 0 reports it).
# Then: run(command='bash infra/gpu/measure.sh', carry=['.gpu'], timeout_s=600).
# PYTHON: any Python 3 with pip (default python3); one with PyAV (the test venv) cuts the clip.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
AVPY=${AVPY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo "$PY")}
BUILD=${POSEPIPE_GPU_BUILD:-/tmp/posepipe-gpu-build}
SHARED=${POSEPIPE_SHARED:-../shared}
GOLDEN="yolox_s hrnet_w32_coco_256x192 rtmpose_m_coco_256x192 simplebaseline_res50_coco_256x192 rle_res50_coco_256x192 hmr_spin_resnet50 videopose3d_243_coco"
STREET_FRAMES=384
TARGET=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
        --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
        --platform manylinux1_x86_64)

pip_() {  # pip, its output shown only when it fails (this machine's pip config warns about a missing local index)
    local log; log=$(mktemp)
    if "$PY" -m pip --disable-pip-version-check "$@" >"$log" 2>&1; then rm -f "$log"; else cat "$log" >&2; rm -f "$log"; return 1; fi
}

mkdir -p .git/info
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
mkdir -p "$BUILD" .gpu

echo "1. wheels for CPython 3.12 manylinux x86-64 (carry.txt, with what they need)"
rm -rf "$BUILD/wheels" "$BUILD/fallback"
pip_ download "${TARGET[@]}" -d "$BUILD/wheels" -r infra/gpu/carry.txt
pip_ download "${TARGET[@]}" -d "$BUILD/fallback" pytest==9.2.0
"$PY" infra/gpu/carried.py drop-image "$BUILD/wheels"
for whl in "$BUILD"/fallback/*.whl; do   # pytest's own needs that the site or the image already has
    name=$(basename "$whl" | cut -d- -f1)
    if ls "$BUILD"/wheels/"$name"-*.whl >/dev/null 2>&1 || grep -qix "$(echo "$name" | tr _ -)" infra/gpu/image.txt; then rm "$whl"; fi
done

stamp=$( (ls "$BUILD"/wheels "$BUILD"/fallback; cat infra/gpu/prepare.sh infra/gpu/carried.py) | sha256sum | cut -c1-16)
if [ -f .gpu/site.tar.xz ] && [ "$(cat .gpu/site.stamp 2>/dev/null)" = "$stamp" ]; then
    echo "2. .gpu/site.tar.xz is up to date ($stamp)"
else
    echo "2. installing into a staging folder, slimming, stripping, compressing (a few minutes on 2 cores)"
    rm -rf "$BUILD/site"
    pip_ install --no-index --no-deps --no-compile "${TARGET[@]}" --target "$BUILD/site" "$BUILD"/wheels/*.whl
    pip_ install --no-index --no-deps --no-compile "${TARGET[@]}" --target "$BUILD/site/.fallback" "$BUILD"/fallback/*.whl
    rm -rf "$BUILD/site/bin" "$BUILD/site/.fallback/bin"
    "$PY" infra/gpu/carried.py slim "$BUILD/site"
    if command -v strip >/dev/null && command -v file >/dev/null; then
        find "$BUILD/site" -type f \( -name '*.so' -o -name '*.so.*' -o -path '*/ray/core/src/*' \) -print0 \
            | xargs -0 file | grep 'ELF.*not stripped' | cut -d: -f1 | xargs -r strip --strip-unneeded
    else
        echo "   (no strip/file here: carried unstripped)"
    fi
    tar -C "$BUILD/site" -cf - . | xz -9 -T2 > .gpu/site.tar.xz.tmp
    mv .gpu/site.tar.xz.tmp .gpu/site.tar.xz
    echo "$stamp" > .gpu/site.stamp
fi

echo "3. golden vectors and the street clip"
rm -rf .gpu/shared && mkdir -p .gpu/shared/golden .gpu/shared/media
for model in $GOLDEN; do
    mkdir -p ".gpu/shared/golden/$model"
    cp "$SHARED/golden/$model/manifest.json" "$SHARED"/golden/"$model"/case_seed*.npz ".gpu/shared/golden/$model/"
done
if "$AVPY" infra/gpu/carried.py cut "$SHARED/media/vtest.avi" .gpu/shared/media/vtest.avi "$STREET_FRAMES"; then
    echo "   vtest.avi: its first $STREET_FRAMES frames"
else
    rm -f .gpu/shared/media/vtest.avi
    echo "   could not cut vtest.avi (no PyAV in $AVPY?): the run uses samples/street.mp4"
fi
"$PY" infra/gpu/carried.py manifest .gpu "$BUILD/wheels" "$BUILD/fallback"
du -sh .gpu/site.tar.xz .gpu/shared

echo "4. what travels"
"$PY" infra/gpu/travel.py --carry .gpu
echo "ready: run(command='bash infra/gpu/measure.sh', carry=['.gpu'], timeout_s=600); here first: bash infra/gpu/measure.sh --dry-run"
