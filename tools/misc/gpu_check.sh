#!/usr/bin/env bash
# The GPU check: a few minutes on one GPU, on a machine where this repository
# is installed (`make install`).
#
#   bash tools/misc/gpu_check.sh [OUT_DIR]        (default: work_dirs/gpu_check)
#
# 1. tools/misc/gpu_check.py: training steps of configs/daf_r50_cub.py at 448,
#    batch 8 (random weights, random images) in fp32, fp32 + with_cp, AMP,
#    AMP + with_cp (what configs/daf_r50_cub_fp16-cp.py trains) and AMP +
#    with_cp under DDP; prints peak memory, step time, their ratios to fp32,
#    finite losses and gradients, skipped fp16 steps and the loss scale.
# 2. benchmarks/speed.py --device cuda --amp: the DAF step's cost in backbone
#    passes (train and inference ratios) and the per-stage breakdown.
# Both write JSON and text under OUT_DIR. Exit status 1 if a check fails.
set -euo pipefail

TOOLS_DIR=$(dirname "$0")/..
REPO_ROOT=$(CDPATH= cd -- "$TOOLS_DIR/.." && pwd)
# shellcheck source=find_python.sh
source "$TOOLS_DIR/misc/find_python.sh"
find_python "$REPO_ROOT" gpu_check.sh
cd "$REPO_ROOT"

OUT_DIR=${1:-work_dirs/gpu_check}
mkdir -p "$OUT_DIR"
if ! "$PYTHON" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
    echo "gpu_check.sh: torch sees no GPU (torch.cuda.is_available() is False)" >&2
    exit 1
fi

status=0
"$PYTHON" tools/misc/gpu_check.py --config configs/daf_r50_cub.py --size 448 --batch 8 \
    --steps 3 --out "$OUT_DIR/gpu_check.json" 2>&1 | tee "$OUT_DIR/gpu_check.txt" || status=1
"$PYTHON" benchmarks/speed.py --config configs/daf_r50_cub.py --device cuda --amp \
    --size 448 --batch 8 --repeats 5 --warmup 2 --out "$OUT_DIR/speed_amp.json" \
    2>&1 | tee "$OUT_DIR/speed_amp.txt" || status=1
echo "gpu_check.sh: results in $OUT_DIR (exit status $status)"
exit $status
