#!/usr/bin/env bash
# GRPO vs AEPO on the built-in task, on a laptop CPU (no GPU, no download, ~3-5 minutes).
# Writes runs/cpu_demo/{entropy.png,summary.json} and one TensorBoard log per run.
set -euo pipefail
cd "$(dirname "$0")/.."
AEPO="${AEPO:-.venv/bin/aepo}"
OUT="${OUT:-runs/cpu_demo}"

# 1. The demo: cached warm start, then GRPO and AEPO at H* = 0.15 and 0.25.
"$AEPO" demo --output-dir "$OUT" --targets 0.15 0.25 "$@"

# 2. The same figure from the TensorBoard logs (works for any runs, local or verl).
"$AEPO" plot "$OUT"/grpo "$OUT"/aepo_H_0.15 "$OUT"/aepo_H_0.25 -o "$OUT/entropy_from_logs.png"

# 3. One single run from a config file, then resume it to more steps from its checkpoint.
"$AEPO" train --config configs/tiny/aepo_target_0.25.yaml --output-dir "$OUT/train" --steps 50
"$AEPO" train --config configs/tiny/aepo_target_0.25.yaml --output-dir "$OUT/train" --steps 100 --resume

echo "open $OUT/entropy.png, or: tensorboard --logdir $OUT"
