#!/usr/bin/env bash
# Launch one of the shipped verl configs (configs/<name>.yaml) on this node's 8 GPUs, or on a
# Ray cluster (NNODES > 1, see qwen-math-7b-AEPO-multinode.sh). Used by the qwen-math-7b-*.sh
# scripts; call it directly for any config:  bash examples/verl_run.sh aepo_h0.75 [key=value ...]
# AEPO_DRY_RUN=1 runs every start-up check (config, model, data) and prints the run's plan
# without starting Ray: a minute on a login node instead of a failed job on 8 GPUs.
set -euo pipefail

CONFIG_NAME=${1:?usage: verl_run.sh CONFIG_NAME [hydra overrides...]}
shift
REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ ! -f "$REPO_DIR/configs/$CONFIG_NAME.yaml" ]; then
    echo "no config $REPO_DIR/configs/$CONFIG_NAME.yaml; shipped:" \
        "$(cd "$REPO_DIR/configs" && ls *.yaml | sed 's/\.yaml$//' | tr '\n' ' ')" >&2
    exit 2
fi

# Everything a user usually changes, as variables (override from the environment).
# MODEL_PATH: a Hugging Face hub id or a local directory holding config, tokenizer and weights
# (the dry run says which, and names what a local directory lacks).
MODEL_PATH=${MODEL_PATH:-Qwen/Qwen2.5-Math-7B}
DATA_DIR=${DATA_DIR:-$REPO_DIR/outputs/data}
TRAIN_FILES=${TRAIN_FILES:-$DATA_DIR/dapo17k.parquet}
VAL_FILES=${VAL_FILES:-$DATA_DIR/val.parquet}
RUN_NAME=${RUN_NAME:-$CONFIG_NAME}
OUTPUT_DIR=${OUTPUT_DIR:-$REPO_DIR/outputs/verl/$RUN_NAME}
NNODES=${NNODES:-1}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}

# Absolute, because verl's TensorBoard writer resolves a relative path in the Ray actor's
# working directory, not in this shell's.
export TENSORBOARD_DIR=${TENSORBOARD_DIR:-$REPO_DIR/outputs/tensorboard/$RUN_NAME}
case $TENSORBOARD_DIR in /*) ;; *) echo "TENSORBOARD_DIR must be absolute: $TENSORBOARD_DIR" >&2; exit 2 ;; esac
mkdir -p "$TENSORBOARD_DIR" "$OUTPUT_DIR"

python -m aepo.backends.verl.main \
    --config-path "$REPO_DIR/configs" --config-name "$CONFIG_NAME" \
    data.train_files="$TRAIN_FILES" \
    data.val_files="$VAL_FILES" \
    actor_rollout_ref.model.path="$MODEL_PATH" \
    trainer.experiment_name="$RUN_NAME" \
    trainer.default_local_dir="$OUTPUT_DIR/checkpoints" \
    trainer.nnodes="$NNODES" \
    trainer.n_gpus_per_node="$GPUS_PER_NODE" \
    +ray_kwargs.ray_init.runtime_env.env_vars.TENSORBOARD_DIR="$TENSORBOARD_DIR" \
    "$@" 2>&1 | tee -a "$OUTPUT_DIR/train.log"   # -a: re-running resumes, keep the earlier log
