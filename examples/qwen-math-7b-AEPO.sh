#!/usr/bin/env bash
# AEPO on Qwen2.5-Math-7B with the paper's settings, one node with 8 GPUs.
#   bash examples/qwen-math-7b-AEPO.sh            # H* = 0.5 (configs/aepo_h0.5.yaml)
#   bash examples/qwen-math-7b-AEPO.sh 0.75       # configs/aepo_h0.75.yaml
#   MODEL_PATH=/models/Qwen2.5-Math-7B bash examples/qwen-math-7b-AEPO.sh 0.5 trainer.total_epochs=2
# Variables: MODEL_PATH TRAIN_FILES VAL_FILES TENSORBOARD_DIR OUTPUT_DIR RUN_NAME (examples/verl_run.sh).
# Lengths: prompt 2048 + response 2048 tokens, as in the authors' released config, because
# Qwen2.5-Math-7B's config.json has 4096 positions. The paper's 8192-token responses need a
# copy of the model whose config.json sets max_position_embeddings >= 10240 (and a larger
# rope_theta, e.g. 40000):
#   MODEL_PATH=/models/Qwen2.5-Math-7B-10k bash examples/qwen-math-7b-AEPO.sh 0.5 data.max_response_length=8192
set -euo pipefail
TARGET=${1:-0.5}
shift || true
exec bash "$(dirname "${BASH_SOURCE[0]}")/verl_run.sh" "aepo_h$TARGET" "$@"
