#!/usr/bin/env bash
# The paper's baselines and ablations on Qwen2.5-Math-7B, one node with 8 GPUs, one after another.
#   bash examples/qwen-math-7b-baselines.sh                       # all four
#   bash examples/qwen-math-7b-baselines.sh entropy_reg entropy_adv
# entropy_reg: entropy bonus | entropy_adv: entropy-shaped advantages |
# aepo_no_temperature: AEPO without the temperature | aepo_advantage: group advantages as signal.
# Clip-higher / Clip-Cov / KL-Cov are verl options, e.g.
#   RUN_NAME=clip_higher bash examples/verl_run.sh grpo actor_rollout_ref.actor.clip_ratio_high=0.28
set -euo pipefail
HERE=$(dirname "${BASH_SOURCE[0]}")
NAMES=("$@")
[ ${#NAMES[@]} -gt 0 ] || NAMES=(entropy_reg entropy_adv aepo_no_temperature aepo_advantage)
for name in "${NAMES[@]}"; do
    RUN_NAME=$name bash "$HERE/verl_run.sh" "$name"
done
