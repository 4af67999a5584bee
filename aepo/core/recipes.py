"""Which core pieces each ``algorithm:`` uses: the one place that maps a name to behaviour,
so engines branch on recipe fields, never on algorithm names (and cannot disagree)."""

from __future__ import annotations

from dataclasses import dataclass

from aepo.core.config import AEPOConfig


@dataclass(frozen=True)
class Recipe:
    extra_rollout: bool
    """sample extra responses for a REINFORCE term"""
    controlled_temperature: bool
    """extra samples at the controller's T_high/T_low; False: at T = 1 (ablation)"""
    signal: str
    """'reward' (R, positives only) or 'advantage' (group advantage, any sign; ablation)"""
    entropy_coef: float
    """Entropy-Reg: bonus lambda * H on the current policy (0 disables)"""
    entropy_adv: bool
    """Entropy-Adv: shape GRPO advantages with pi_old's token entropy"""


def recipe_for(cfg: AEPOConfig) -> Recipe:
    algo = cfg.algorithm
    return Recipe(
        extra_rollout=algo in ("aepo", "aepo_no_temperature", "aepo_advantage"),
        controlled_temperature=algo in ("aepo", "aepo_advantage"),
        signal="advantage" if algo == "aepo_advantage" else "reward",
        entropy_coef=cfg.entropy_coef if algo == "entropy_reg" else 0.0,
        entropy_adv=algo == "entropy_adv",
    )
