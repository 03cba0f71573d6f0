#!/usr/bin/env bash
# Run HERE (a machine with PyPI and ../shared) before measure.sh runs on the GPU machine: puts what
# that machine lacks into .gpu/ (git-ignored, carried with the call): the PyAV wheel for its Python
# 3.12, the golden vectors and the bench clip. About 56 MiB; the device tool carries 64 MiB at most.
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.gpu/' .git/info/exclude || echo '/.gpu/' >> .git/info/exclude
rm -rf .gpu && mkdir -p .gpu/whl .gpu/shared/golden .gpu/shared/media
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .gpu/whl av==18.1.0
for model in yolox_s hrnet_w32_coco_256x192 videopose3d_243_coco hmr_spin_resnet50; do
    cp -r "../shared/golden/$model" .gpu/shared/golden/
done
cp ../shared/golden/README*.md .gpu/shared/golden/ 2>/dev/null || true
cp ../shared/media/vtest.avi .gpu/shared/media/
du -sh .gpu
echo "now, with the device tool: run(command='bash infra/gpu/measure.sh', carry=['.gpu'], timeout_s=600)"
