#!/usr/bin/env bash
# Train on NPROC processes with torch.distributed (torchrun):
#   bash tools/dist_train.sh CONFIG NPROC [tools/train.py options]
# One process per GPU with NCCL; without GPUs, NPROC CPU processes with gloo.
# Several machines: set NNODES, NODE_RANK, MASTER_ADDR and PORT on each.
# PYTHON picks the interpreter (default: python).
set -euo pipefail

CONFIG=$1
NPROC=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
PYTHON=${PYTHON:-python}
TOOLS=$(dirname "$0")

PYTHONPATH="$TOOLS/..":${PYTHONPATH:-} \
"$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$NPROC" \
    --master_port="$PORT" \
    "$TOOLS/train.py" \
    "$CONFIG" \
    --launcher pytorch "${@:3}"
