#!/usr/bin/env bash
# Distributed training on one or several nodes with torchrun.
#
#   bash tools/dist_train.sh CONFIG GPUS [train.py args...]
#
# GPUS is the number of processes per node: one per GPU (NCCL), or, on a machine without CUDA,
# CPU processes that train with gloo (tools/train.py / test.py switch the backend).
#
# Multi-node: run on every node with NNODES, NODE_RANK (0..NNODES-1), MASTER_ADDR (the address of
# node 0) and PORT (a free port there) set the same way, e.g.
#   NNODES=2 NODE_RANK=0 PORT=29500 MASTER_ADDR=10.0.0.1 bash tools/dist_train.sh CONFIG 8
#
# DENSEVLM_TOOL names another script of tools/ taking CONFIG and --launcher (the region cache pass:
# tools/dist_build_region_cache.sh).
set -e

CONFIG=$1
GPUS=$2
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
    "$(dirname "$0")/${DENSEVLM_TOOL:-train.py}" \
    "$CONFIG" \
    --launcher pytorch "${@:3}"
