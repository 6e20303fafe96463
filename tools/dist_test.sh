#!/usr/bin/env bash
# Data-parallel evaluation with torchrun (python -m torch.distributed.run).
#
#   tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py args...]
#
# Rank 0 prints the metrics as one JSON line at the end, as tools/test.py does.
# Environment: NNODES, NODE_RANK, MASTER_ADDR, PORT (defaults 1 / 0 /
# 127.0.0.1 / 29500) and PYTHON (default: an activated environment, else the
# repository's .venv, else python on PATH), as in dist_train.sh.
set -euo pipefail

if [[ $# -lt 3 ]]; then
    echo "usage: $0 CONFIG CHECKPOINT GPUS [test.py args...]" >&2
    exit 2
fi
CONFIG=$1
CHECKPOINT=$2
GPUS=$3
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
TOOLS_DIR=$(dirname "$0")
REPO_ROOT=$(CDPATH= cd -- "$TOOLS_DIR/.." && pwd)
# shellcheck source=misc/find_python.sh
source "$TOOLS_DIR/misc/find_python.sh"
find_python "$REPO_ROOT" dist_test.sh

PYTHONPATH="$REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}" \
"$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" \
    --master_port="$PORT" \
    "$TOOLS_DIR/test.py" "$CONFIG" "$CHECKPOINT" --launcher pytorch "${@:4}"
