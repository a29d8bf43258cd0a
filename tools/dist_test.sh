#!/usr/bin/env bash
# Test on NPROC processes with torch.distributed (torchrun):
#   bash tools/dist_test.sh CONFIG CHECKPOINT NPROC [tools/test.py options]
# One process per GPU with NCCL; without GPUs, NPROC CPU processes with gloo.
# Several machines: set NNODES, NODE_RANK, MASTER_ADDR and PORT on each.
# PYTHON picks the interpreter (default: python).
set -euo pipefail

CONFIG=$1
CHECKPOINT=$2
NPROC=$3
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
    "$TOOLS/test.py" \
    "$CONFIG" \
    "$CHECKPOINT" \
    --launcher pytorch "${@:4}"
