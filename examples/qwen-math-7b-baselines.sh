#!/usr/bin/env bash
# The paper's baselines and ablations, and the field's entropy controls, on Qwen2.5-Math-7B, one
# node with 8 GPUs, one after another.
#   bash examples/qwen-math-7b-baselines.sh                       # all eleven
#   bash examples/qwen-math-7b-baselines.sh entropy_reg clip_cov
# entropy_reg: entropy bonus | entropy_adv: entropy-shaped advantages |
# aepo_no_temperature: AEPO without the temperature | aepo_advantage: group advantages as signal |
# clip_cov / kl_cov: verl's covariance losses (arXiv 2505.22617) | adaptive_entropy: Skywork-OR1's
# adaptive entropy bonus (arXiv 2505.22312) | top_entropy: the 80/20 rule (arXiv 2506.01939) |
# dcpo: the AEPO authors' DCPO (arXiv 2601.12730), old log-probs again at T, no extra generation |
# entropic: EntroPIC (arXiv 2511.15248), a PI controller weighing high-probability tokens |
# entrocraft: Entrocraft (arXiv 2604.26326), RAFT++ above an entropy band, NSR below, GRPO inside.
# Clip-higher is a verl option, e.g.
#   RUN_NAME=clip_higher bash examples/verl_run.sh grpo actor_rollout_ref.actor.clip_ratio_high=0.28
set -euo pipefail
HERE=$(dirname "${BASH_SOURCE[0]}")
NAMES=("$@")
[ ${#NAMES[@]} -gt 0 ] || NAMES=(entropy_reg entropy_adv aepo_no_temperature aepo_advantage clip_cov kl_cov adaptive_entropy top_entropy dcpo entropic entrocraft)
for name in "${NAMES[@]}"; do
    RUN_NAME=$name bash "$HERE/verl_run.sh" "$name"
done
