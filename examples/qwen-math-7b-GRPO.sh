#!/usr/bin/env bash
# The GRPO baseline (entropy collapse) on Qwen2.5-Math-7B, one node with 8 GPUs.
#   bash examples/qwen-math-7b-GRPO.sh [hydra overrides...]
set -euo pipefail
exec bash "$(dirname "${BASH_SOURCE[0]}")/verl_run.sh" grpo "$@"
