#!/usr/bin/env bash
# Data-parallel training with torchrun (python -m torch.distributed.run).
#
#   tools/dist_train.sh CONFIG GPUS [train.py args...]
#
# GPUS processes on this node (one per GPU; on a machine without CUDA, GPUS CPU
# processes on the gloo backend). Multi-node: run the same command on every
# node with NNODES, NODE_RANK (0..NNODES-1), MASTER_ADDR (node 0's address) and
# PORT set; defaults 1 / 0 / 127.0.0.1 / 29500. The interpreter: PYTHON if
# set, else an activated virtualenv/conda environment, else the repository's
# .venv (from `make install`), else python on PATH (tools/misc/find_python.sh).
set -euo pipefail

if [[ $# -lt 2 ]]; then
    echo "usage: $0 CONFIG GPUS [train.py args...]" >&2
    exit 2
fi
CONFIG=$1
GPUS=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
TOOLS_DIR=$(dirname "$0")
REPO_ROOT=$(CDPATH= cd -- "$TOOLS_DIR/.." && pwd)
# shellcheck source=misc/find_python.sh
source "$TOOLS_DIR/misc/find_python.sh"
find_python "$REPO_ROOT" dist_train.sh

PYTHONPATH="$REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}" \
"$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" \
    --master_port="$PORT" \
    "$TOOLS_DIR/train.py" "$CONFIG" --launcher pytorch "${@:3}"
