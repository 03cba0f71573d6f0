#!/usr/bin/env bash
# Run ON THE GPU MACHINE (one H100/H200, 16 vCPUs, its image's python3 with CUDA torch; no internet)
# after prepare.sh here: everything issue 11 asks to measure on a GPU, in one run of under 10 minutes.
#   1. parity on CUDA: the golden tests (fp32 exact, fp16 bounds), a worker's rows on GPU vs CPU, and
#      the device path against the reference path (tests/pipeline/test_device_path.py)          ~3 min
#   2. speed: `posepipe bench`'s sections for one worker (per-frame paths, models, in-process end to
#      end, naive loop) and 1-4 worker processes sharing the GPU, with CPU finishers      ~5 min
# Results land in $OUT (the device tool brings them back): gpu.txt, parity.log, bench.json, bench.log.
# That machine has no Ray (its wheel is larger than what travels): workers are plain processes
# running the same PoseWorker/VideoFinisher code as Ray's actors (infra/gpu/throughput.py).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/posepipe-gpu-out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 POSEPIPE_SHARED="$PWD/.gpu/shared" OMP_WAIT_POLICY=PASSIVE
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/whl/*.whl || exit 1
# posepipe's three folders under its import name, without installing (no build tools needed)
mkdir -p /tmp/pp/posepipe && for p in models pipeline jobs; do ln -sfn "$PWD/$p" "/tmp/pp/posepipe/$p"; done
export PYTHONPATH="/tmp/pp:/tmp/site:$PWD"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc; python3 -c "import torch, av; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'av', av.__version__)"; } 2>&1 | tee "$OUT/gpu.txt"

timeout 200 python3 -m pytest -q -p no:cacheprovider -s tests/models/test_cuda.py tests/pipeline/test_worker_cuda.py \
    tests/pipeline/test_device_path.py tests/models/test_yolox_device.py tests/models/test_ondevice.py 2>&1 | tee "$OUT/parity.log"

timeout 330 python3 infra/gpu/throughput.py --video .gpu/shared/media/vtest.avi --frames 384 --workers 1,2,3,4 \
    --out "$OUT/bench.json" 2>&1 | tee "$OUT/bench.log"
