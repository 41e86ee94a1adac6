#!/usr/bin/env bash
# Distributed testing on one or several nodes with torchrun.
#
#   bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py args...]
#
# GPUS is the number of processes per node: one per GPU (NCCL), or, on a machine without CUDA,
# CPU processes that train with gloo (tools/train.py / test.py switch the backend).
#
# Multi-node: NNODES, NODE_RANK, MASTER_ADDR and PORT as in tools/dist_train.sh.
set -e

CONFIG=$1
CHECKPOINT=$2
GPUS=$3
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
# the repository's .venv when there is one (the packages are not in the system python)
VENV_PYTHON="$(dirname "$0")/../.venv/bin/python"
if [ -z "$PYTHON" ] && [ -x "$VENV_PYTHON" ]; then PYTHON="$VENV_PYTHON"; fi
PYTHON=${PYTHON:-python}

PYTHONPATH="$(dirname "$0")/..":$PYTHONPATH \
"$PYTHON" -m torch.distributed.run \
    --nnodes=$NNODES \
    --node_rank=$NODE_RANK \
    --master_addr=$MASTER_ADDR \
    --nproc_per_node=$GPUS \
    --master_port=$PORT \
    "$(dirname "$0")/test.py" \
    "$CONFIG" \
    "$CHECKPOINT" \
    --launcher pytorch \
    "${@:4}"
