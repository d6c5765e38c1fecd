#!/usr/bin/env bash
# The GPU check of issue 12, one short run (about 5 minutes on one H200):
#   1. benchmarks/bench_distributed.py --gpu: images/s of PGD-10 AT on PreActResNet-18 (CIFAR-10
#      shapes, synthetic, bf16 autocast, channels_last) through metaadv's trainer, next to a bare
#      hand-written PGD-10 loop in the same run (target: metaadv >= 0.90 of the bare loop);
#   2. a single-GPU Ray Train smoke: `metaadv train --workers 1 --gpus-per-worker 1` on digits,
#      which must train on the worker's GPU and leave a checkpoint `metaadv evaluate` reads.
# Run from the repository root:  bash benchmarks/gpu_check.sh [OUT_DIR]
# The Train smoke needs Ray; where `import ray` fails it says so and skips that part (a lent
# machine may not have Ray, and its wheel is larger than what can be carried there).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${1:-${OUT:-/tmp/metaadv-gpu-check}}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 RAY_AUTH_MODE=disabled
status=0

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || status=1
$PY -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'GPU', torch.cuda.is_available())"

echo "== 1. PGD-10 AT on one GPU: metaadv vs a bare loop"
timeout 360 $PY benchmarks/bench_distributed.py --gpu --batch-size 256 --steps 20 --rounds 3 2>&1 | tee "$OUT/bench_gpu.txt" || status=1

echo "== 2. single-GPU Ray Train smoke"
if $PY -c "import ray" 2>/dev/null; then
    rm -rf "$OUT/smoke"
    timeout 240 $PY -m metaadv.cli train --out "$OUT/smoke" --workers 1 --gpus-per-worker 1 --dataset digits \
        --rounds 2 --steps-per-round 20 --val-size 100 --val-pgd-steps 5 2>&1 | tee "$OUT/smoke.txt" || status=1
    grep -q "worker 0 of 1 trains on cuda" "$OUT/smoke.txt" || { echo "the worker did not train on its GPU"; status=1; }
    $PY -m metaadv.cli evaluate "$OUT/smoke" --n 100 --attacks pgd 2>&1 | tail -3 || status=1
else
    echo "SKIPPED: Ray is not installed here (pip install 'ray[train,tune]' to run the Train smoke)"
fi
echo "gpu_check: $([ $status = 0 ] && echo ok || echo FAILED)"
exit $status
