#!/usr/bin/env bash
# The P-VLM region cache pass with several processes (torchrun), as tools/dist_train.sh runs
# training: NCCL on GPUs, gloo CPU processes without CUDA; multi-node with NNODES, NODE_RANK,
# MASTER_ADDR and PORT.
#
#   bash tools/dist_build_region_cache.sh CONFIG NPROC [build_region_cache.py args...]
set -e
DENSEVLM_TOOL=build_region_cache.py exec bash "$(dirname "$0")/dist_train.sh" "$@"
