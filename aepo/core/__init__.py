"""The AEPO algorithm, framework-free (torch only): both engines call into this package."""

from aepo.core.advantages import (
    entropy_shaped_advantages,
    group_advantage,
    reinforce_advantages,
)
from aepo.core.config import ALGORITHMS, AEPOConfig, ConfigError, load_aepo_config
from aepo.core.controller import LOWER, RAISE, Decision, EntropyController
from aepo.core.entropy import token_logprobs_and_entropy
from aepo.core.losses import (
    AGG_MODES,
    VERL_AGG_MODES,
    aggregate,
    entropy_bonus_loss,
    eq1_row_scale,
    masked_mean,
    ppo_clip_loss,
)
from aepo.core.merge import MergePlan, plan_merge
from aepo.core.recipes import Recipe, recipe_for
from aepo.core.rollout_budget import (
    ExtraRolloutPlan,
    PositiveRateTracker,
    plan_extra_rollout,
    plan_for_decision,
)
from aepo.core.selection import (
    Selection,
    select_from_extra_rollout,
    select_reinforce_samples,
)
from aepo.core.step import AEPOStep, StepPlan

__all__ = [
    "AGG_MODES",
    "ALGORITHMS",
    "AEPOStep",
    "StepPlan",
    "VERL_AGG_MODES",
    "eq1_row_scale",
    "AEPOConfig",
    "ConfigError",
    "Decision",
    "EntropyController",
    "ExtraRolloutPlan",
    "LOWER",
    "MergePlan",
    "PositiveRateTracker",
    "RAISE",
    "Recipe",
    "Selection",
    "aggregate",
    "entropy_bonus_loss",
    "entropy_shaped_advantages",
    "group_advantage",
    "load_aepo_config",
    "masked_mean",
    "plan_extra_rollout",
    "plan_for_decision",
    "plan_merge",
    "ppo_clip_loss",
    "recipe_for",
    "reinforce_advantages",
    "select_from_extra_rollout",
    "select_reinforce_samples",
    "token_logprobs_and_entropy",
]
