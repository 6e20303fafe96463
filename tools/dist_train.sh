#!/usr/bin/env bash
# Data-parallel training with torchrun (python -m torch.distributed.run).
#
#   tools/dist_train.sh CONFIG GPUS [train.py args...]
#
# GPUS processes on this node (one per GPU; on a machine without CUDA, GPUS CPU
# processes on the gloo backend). Multi-node: run the same command on every
# node with NNODES, NODE_RANK (0..NNODES-1), MASTER_ADDR (node 0's address) and
# PORT set; defaults 1 / 0 / 127.0.0.1 / 29500. PYTHON picks the interpreter
# (default: python, else python3).
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
PYTHON=${PYTHON:-$(command -v python || command -v python3)}
TOOLS_DIR=$(dirname "$0")

PYTHONPATH="$TOOLS_DIR/..${PYTHONPATH:+:$PYTHONPATH}" \
"$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" \
    --master_port="$PORT" \
    "$TOOLS_DIR/train.py" "$CONFIG" --launcher pytorch "${@:3}"
