"""Tuned settings for the built-in contains_digit task, shared by ``aepo demo``, the benchmark and the
``configs/tiny/*.yaml`` files (a test keeps the YAML files equal to these).

``AEPOConfig``'s defaults are the paper's (7B models, 8k-token answers). A 0.1M-parameter
model on 5-token answers needs more authority per step: wider temperatures, a large alpha on a
few rows (cheap to generate) and proportional gain, so the push fades near the target.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from aepo.core.config import READS

DEMO_TARGETS = (0.25, 0.5, 0.75, 1.0)
"""the paper's targets; the built-in contains_digit task allows up to 1.63 nats/token at full
reward"""

TINY_TRAINER: dict[str, Any] = {
    "steps": 150,
    "prompts_per_step": 32,
    "samples_per_prompt": 8,
    "max_new_tokens": 5,
    # At 1e-3 a nearly all-correct policy gets few non-zero gradients, and Adam's step after a
    # run of them spiked the entropy upwards (GRPO's reward fell to 0.5 for a few steps; AEPO
    # at H* = 0.25 sat 6.4% above its target); 5e-4 holds 0.25 within 0.3%.
    "lr": 5e-4,
    "mini_batches": 4,
    "ppo_epochs": 1,
    # A large alpha on few rows gives gradient norms of 2-5; clipping at 1 would scale the
    # REINFORCE push (and GRPO with it) back down, clipping at 3 keeps the warm start stable.
    "grad_clip": 3.0,
    "save_every": 50,
    "seed": 0,
}

# The AEPO knobs of the tiny runs and the baselines' constants (the paper's values); each
# tiny config carries the part its algorithm reads (``aepo.core.config.READS``: a key the
# algorithm ignores is refused), so no setting it uses is hidden in a default.
TINY_AEPO: dict[str, Any] = {
    "t_high": 2.0,
    "t_low": 0.5,
    # batch_share with alpha 16, not the paper meaning: the batch is fixed here, so
    # batch_share's dependence on batch size costs nothing (the verl configs keep the paper
    # meaning; docs/alpha.md, What alpha_meaning changes). On contains_digit alpha 32 cost reward
    # at high targets (0.83 at H* = 1.0, against 0.98 at 16) for no tighter tracking.
    "alpha": 16.0,
    "alpha_meaning": "batch_share",
    "samples_up": 12,
    "samples_down": 12,
    # verl's default mode: the temperature comes from the last measurement and the push is
    # settled from this step's own (aepo.core.controller.settle), which made it as tight as
    # current_batch on contains_digit (docs/demo.md, make bench: the AEPO rows).
    "entropy_source": "previous_step",
    "positive_filter": "reward",
    "merge": "replace_zero_advantage",
    # The integral term removes the offset a proportional push leaves against GRPO's steady
    # drift: on contains_digit (previous_step, seed 0) it took H* = 0.5 from 4.0% to 0.5%
    # tracking error and H* = 1.0 from 2.0% to 0.2% (RMS deviation 0.043 -> 0.018).
    "controller": {"gain": "proportional", "proportional_gain": 4.0, "integral_gain": 0.1},
    # A step that gets fewer positives than budgeted is fine (the controller pushes again
    # next step); not oversampling and capping a pass at 8% of the rows keeps extra
    # generation at 3-4% of the GRPO group's tokens over a run (near the target the push
    # needs one prompt's samples, the auto budget's floor).
    "extra_rollout": {"budget": "auto", "oversample": 1.0, "max_fraction": 0.08},
    "baselines": {"entropy_reg": {"coef": 0.015}, "entropy_adv": {"beta": 0.4, "kappa": 2.0}},
}

ENTROPY_METHOD_BASELINES = (
    "clip_cov",
    "kl_cov",
    "adaptive_entropy",
    "top_entropy",
    "dcpo",
    "entropic",
    "entrocraft",
)
"""the field's entropy controls (Clip-Cov, KL-Cov, Skywork-OR1, 80/20, DCPO, EntroPIC,
Entrocraft), each at its papers'
defaults: the tiny configs add no section for them, so ``AEPOConfig``'s defaults apply"""

ALGORITHM_TARGET = 0.5
"""target used by the single-target runs (ablations, configs that are not per-target)"""


def tiny_run_config(
    algorithm: str = "aepo",
    target: float | None = None,
    output_dir: str | None = None,
    **trainer_overrides: Any,
) -> dict[str, Any]:
    """The raw ``{'aepo': ..., 'trainer': ...}`` mapping for one tiny-task run."""
    reads = READS[algorithm]
    aepo: dict[str, Any] = {
        "algorithm": algorithm,
        "target_entropy": ALGORITHM_TARGET if target is None else target,
    }
    for key, value in TINY_AEPO.items():
        if key == "baselines":
            own = {k: v for k, v in value.items() if f"baselines.{k}" in reads}
            if own:
                aepo[key] = copy.deepcopy(own)
        elif key in reads:
            aepo[key] = copy.deepcopy(value)
    trainer = dict(TINY_TRAINER)
    if output_dir is not None:
        trainer["output_dir"] = output_dir
    trainer.update(trainer_overrides)
    return {"aepo": aepo, "trainer": trainer}


def tiny_config_files() -> dict[str, dict[str, Any]]:
    """File name in ``configs/tiny/`` -> contents: one per demo target, one per baseline."""
    files = {
        f"aepo_target_{t}.yaml": tiny_run_config("aepo", t, output_dir=f"runs/tiny/aepo_target_{t}")
        for t in DEMO_TARGETS
    }
    for algorithm in (
        "grpo",
        "entropy_reg",
        "entropy_adv",
        "aepo_no_temperature",
        "aepo_advantage",
        *ENTROPY_METHOD_BASELINES,
    ):
        files[f"{algorithm}.yaml"] = tiny_run_config(algorithm, output_dir=f"runs/tiny/{algorithm}")
    anneal = tiny_run_config("aepo", min(DEMO_TARGETS), output_dir="runs/tiny/aepo_linear_anneal")
    # From the highest demo target down to the lowest over two thirds of the run, then held.
    anneal["aepo"]["target_schedule"] = {
        "kind": "linear",
        "start": max(DEMO_TARGETS),
        "steps": TINY_TRAINER["steps"] * 2 // 3,
    }
    files["aepo_linear_anneal.yaml"] = anneal
    return files


_HEADER = """\
# {name}: the built-in contains_digit task on the tiny Llama (CPU, no download).
# Generated from aepo/backends/local/presets.py (python -m aepo.backends.local.presets);
# a test keeps the two equal. Run: aepo train --config configs/tiny/{name}
# aepo: validated by aepo.core.AEPOConfig; only the keys `algorithm` reads (a key it ignores
# is refused: aepo/core/config.py, READS). Unset keys take the paper's defaults.
# trainer: the local engine's settings (aepo/backends/local/settings.py: TrainerSettings).
"""


def write_tiny_configs(directory: str | Path) -> list[Path]:
    import yaml

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in tiny_config_files().items():
        path = directory / name
        path.write_text(_HEADER.format(name=name) + yaml.safe_dump(content, sort_keys=False))
        written.append(path)
    return written


if __name__ == "__main__":
    import sys

    for p in write_tiny_configs(sys.argv[1] if len(sys.argv) > 1 else "configs/tiny"):
        print(p)
