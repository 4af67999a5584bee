#!/usr/bin/env bash
# AEPO on a Ray cluster of NNODES nodes x 8 GPUs. Every node needs the same environment
# (`pip install -e ".[gpu]"` of this repository at the same path, the model and the data
# reachable at the same paths, e.g. on shared storage). The task runner checks, before any
# worker starts, that every node imports aepo at the driver's version, and names those that do not.
#
# 1. On the head node:    ray start --head --port=6379 --num-gpus=8
# 2. On every other node: ray start --address=HEAD_IP:6379 --num-gpus=8
# 3. On the head node:    NNODES=2 bash examples/qwen-math-7b-AEPO-multinode.sh 0.5
#
# verl's run_ppo finds the running cluster (RAY_ADDRESS=auto), and trainer.nnodes tells it
# how many nodes to place workers on. TENSORBOARD_DIR (absolute) is written by the task
# runner on whichever node it lands: put it on shared storage.
set -euo pipefail
NNODES=${NNODES:?set NNODES to the number of nodes in the Ray cluster}
TARGET=${1:-0.5}
shift || true
export RAY_ADDRESS=${RAY_ADDRESS:-auto}
ray status >/dev/null || { echo "no Ray cluster found: run 'ray start' first (see above)" >&2; exit 2; }
NNODES=$NNODES exec bash "$(dirname "${BASH_SOURCE[0]}")/verl_run.sh" "aepo_h$TARGET" "$@"
