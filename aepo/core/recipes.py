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
    entropy_bonus: float
    """Entropy-Reg: the fixed coefficient lambda of the bonus lambda * H(pi_theta) (0: none)"""
    entropy_adv: bool
    """Entropy-Adv: shape GRPO advantages with pi_old's token entropy"""
    policy_loss: str = "vanilla"
    """verl 0.9.1's policy-loss name (``actor.policy_loss.loss_mode``): ``vanilla`` PPO-clip,
    or ``clip_cov`` / ``kl_cov``, which both engines take from verl's registry"""
    adaptive_entropy: bool = False
    """an entropy bonus whose coefficient follows target_entropy (``aepo.baselines.adaptive_entropy``)"""
    top_entropy_quantile: float | None = None
    """only this share of tokens, those with the highest pi_old entropy, keep an advantage"""
    dcpo: bool = False
    """DCPO: a second old-log-prob pass at T_high/T_low mixes into the advantages
    (``aepo.baselines.dcpo``)"""
    entropic: bool = False
    """EntroPIC: a PI-controlled term on high-probability tokens (``aepo.baselines.entropic``)"""
    entrocraft: bool = False
    """Entrocraft: the advantages follow the entropy's place against a band around the target
    (``aepo.baselines.entrocraft``)"""

    @property
    def has_state(self) -> bool:
        """whether a resumed run needs the saved AEPO state to continue the same run"""
        return (
            self.extra_rollout
            or self.adaptive_entropy
            or self.dcpo
            or self.entropic
            or self.entrocraft
        )

    @property
    def targets_entropy(self) -> bool:
        """whether the algorithm steers towards ``target_entropy`` (a run has a tracking
        error): the same algorithms as :attr:`has_state`, since steering needs the state that
        carries the measurement from step to step"""
        return self.has_state

    @property
    def needs_current_entropy(self) -> bool:
        """whether the update needs pi_theta's token entropy (an entropy bonus)"""
        return self.entropy_bonus > 0 or self.adaptive_entropy or self.entropic


def recipe_for(cfg: AEPOConfig) -> Recipe:
    algo = cfg.algorithm
    return Recipe(
        extra_rollout=algo in ("aepo", "aepo_no_temperature", "aepo_advantage"),
        controlled_temperature=algo in ("aepo", "aepo_advantage"),
        signal="advantage" if algo == "aepo_advantage" else "reward",
        entropy_bonus=cfg.baselines.entropy_reg.coef if algo == "entropy_reg" else 0.0,
        entropy_adv=algo == "entropy_adv",
        policy_loss=algo if algo in ("clip_cov", "kl_cov") else "vanilla",
        adaptive_entropy=algo == "adaptive_entropy",
        top_entropy_quantile=cfg.baselines.top_entropy.quantile if algo == "top_entropy" else None,
        dcpo=algo == "dcpo",
        entropic=algo == "entropic",
        entrocraft=algo == "entrocraft",
    )
