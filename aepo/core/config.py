"""Validated AEPO settings shared by both engines.

One flat model so that Hydra overrides stay short (``aepo.target_entropy=0.5``) and a
typo is rejected instead of silently ignored.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Algorithm = Literal[
    "grpo",
    "aepo",
    "entropy_reg",
    "entropy_adv",
    "aepo_no_temperature",
    "aepo_advantage",
]
ALGORITHMS: tuple[str, ...] = Algorithm.__args__  # type: ignore[attr-defined]


class AEPOConfig(BaseModel):
    """Everything that defines the AEPO regulariser and the paper's baselines.

    Defaults are the paper's (arXiv 2510.08141, Table 4): T_high 1.2, T_low 0.8, at most 60
    positives when raising entropy and 30 when lowering it, alpha 1.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    algorithm: Algorithm = "aepo"

    # --- entropy controller -------------------------------------------------------------
    target_entropy: float = Field(0.5, description="H*, token-mean entropy of pi_old at T=1")
    t_high: float = Field(1.2, description="sampling temperature used to raise entropy")
    t_low: float = Field(0.8, description="sampling temperature used to lower entropy")
    samples_up: int = Field(60, description="max REINFORCE samples per step when H < H*")
    samples_down: int = Field(30, description="max REINFORCE samples per step when H >= H*")
    alpha: float = Field(1.0, description="weight of the REINFORCE term")
    alpha_meaning: Literal["paper", "batch_share"] = "paper"
    clip_ratio: float = Field(0.2, description="eps of the clipped REINFORCE term (and PPO)")
    entropy_ema: float | None = Field(
        None, description="EMA factor on the measured entropy (None: use raw measurement)"
    )
    gain: Literal["fixed", "proportional"] = "fixed"
    proportional_gain: float = Field(
        4.0, description="strength per unit relative error |H-H*|/H* (gain: proportional)"
    )
    integral_gain: float = Field(0.0, description="strength per unit accumulated error")
    integral_limit: float = Field(2.0, description="anti-windup clamp on accumulated error")
    min_strength: float = Field(
        0.1, description="floor on the proportional strength, so the push never vanishes"
    )
    scale_budget: bool = Field(True, description="proportional: scale the sample budget")
    scale_temperature: bool = Field(
        False, description="proportional: scale the temperature offset from 1.0"
    )

    # --- which temperature samples enter the REINFORCE term ------------------------------
    positive_filter: Literal["reward", "advantage"] = "reward"
    reward_threshold: float = Field(1.0, description="reward >= this counts as positive")
    advantage_threshold: float = Field(
        0.05, description="group advantage > this counts as positive (advantage filter)"
    )

    # --- how the extra rollout is scheduled and sized ------------------------------------
    entropy_source: Literal["previous_step", "current_batch"] = "previous_step"
    rollout_budget: Literal["auto", "fixed"] = "auto"
    fixed_prompt_fraction: float = Field(
        0.25, description="fixed budget: this fraction of the prompts x n samples (authors)"
    )
    oversample: float = Field(
        1.3, description="auto budget: generate this many times the expected need"
    )
    min_extra_samples: int = Field(
        8, description="auto budget: never generate fewer extra samples than this"
    )
    max_extra_fraction: float = Field(
        0.5, description="auto budget: at most this fraction of the GRPO rows as extras"
    )
    prior_positive_rate: float = Field(
        0.5, description="auto budget: positive rate assumed before one is observed"
    )

    # --- how selected rows join the GRPO batch -------------------------------------------
    merge: Literal["replace_zero_advantage", "replace_first", "append"] = "replace_zero_advantage"

    # --- baselines ------------------------------------------------------------------------
    entropy_coef: float = Field(0.015, description="Entropy-Reg: lambda of the entropy bonus")
    entropy_adv_beta: float = Field(0.4, description="Entropy-Adv: beta")
    entropy_adv_kappa: float = Field(2.0, description="Entropy-Adv: kappa")

    seed: int = 0

    @model_validator(mode="after")
    def _check_consistency(self) -> AEPOConfig:
        problems = []
        if not self.target_entropy > 0:
            problems.append(f"target_entropy must be > 0, got {self.target_entropy}")
        if not self.t_low > 0:
            problems.append(f"t_low must be > 0, got {self.t_low}")
        if not self.t_high > self.t_low:
            problems.append(f"t_high must be > t_low, got t_high={self.t_high}, t_low={self.t_low}")
        for name in (
            "samples_up",
            "samples_down",
            "min_extra_samples",
            "alpha",
            "proportional_gain",
            "integral_gain",
            "integral_limit",
            "entropy_coef",
            "entropy_adv_beta",
        ):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.entropy_adv_kappa > 0:
            problems.append(f"entropy_adv_kappa must be > 0, got {self.entropy_adv_kappa}")
        if not 0 < self.clip_ratio < 1:
            problems.append(f"clip_ratio must be in (0, 1), got {self.clip_ratio}")
        if self.entropy_ema is not None and not 0 < self.entropy_ema <= 1:
            problems.append(f"entropy_ema must be in (0, 1] or null, got {self.entropy_ema}")
        if not 0 <= self.min_strength <= 1:
            problems.append(f"min_strength must be in [0, 1], got {self.min_strength}")
        if not 0 < self.fixed_prompt_fraction <= 1:
            problems.append(
                f"fixed_prompt_fraction must be in (0, 1], got {self.fixed_prompt_fraction}"
            )
        if not self.oversample >= 1:
            problems.append(f"oversample must be >= 1, got {self.oversample}")
        if not 0 < self.max_extra_fraction:
            problems.append(f"max_extra_fraction must be > 0, got {self.max_extra_fraction}")
        if not 0 < self.prior_positive_rate <= 1:
            problems.append(
                f"prior_positive_rate must be in (0, 1], got {self.prior_positive_rate}"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the source, key and value."""


def validation_problems(err: ValidationError, source: str) -> str:
    """One line per pydantic error, naming ``source.key`` and the offending value (indented
    to follow a ``ConfigError`` heading); shared with the engines' own settings models."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        where = f"{source}.{loc}" if loc else source
        value = e.get("input")
        if e["type"] == "extra_forbidden":
            lines.append(f"{where}: unknown key (value {value!r})")
        else:
            lines.append(f"{where}: {e['msg']} (got {value!r})")
    return "\n  ".join(lines)


def load_aepo_config(raw: dict[str, Any] | None, source: str = "aepo") -> AEPOConfig:
    """Validate a plain mapping into :class:`AEPOConfig`, with errors naming ``source.key``."""
    try:
        return AEPOConfig.model_validate(dict(raw or {}))
    except ValidationError as err:
        raise ConfigError("invalid AEPO config:\n  " + validation_problems(err, source)) from None
