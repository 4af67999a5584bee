"""Validated AEPO settings shared by both engines.

Every key is documented once, here: what it does, its default and where it comes from
(``config_docs.py`` writes the README's table and the ``aepo:`` block of ``aepo_base.yaml``
from these descriptions). The paper's knobs are top-level, so Hydra overrides stay short
(``aepo.target_entropy=0.5``); the controller's tuning, the extra pass's sizing and
Entropy-Adv's constants sit in small sections. A typo, a removed key or a non-finite number
is rejected with the key's name instead of silently ignored.
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

PAPER = "arXiv 2510.08141"
MAX_TEMPERATURE = 2.0
"""vLLM's sampler refuses temperatures above 2 inside a rollout worker, mid-run"""


def doc(what: str, source: str) -> str:
    return f"{what} Source: {source}."


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class ControllerConfig(_Section):
    """How hard the controller pushes."""

    gain: Literal["fixed", "proportional"] = Field(
        "fixed",
        description=doc(
            "`fixed`: the paper's bang-bang rule, full budget and T_high/T_low every step; "
            "`proportional`: the push (budget, and alpha under `alpha_meaning: paper`) "
            "scales with |H - H*| / H*, so it fades near the target.",
            f"fixed: {PAPER} Sec. 3; proportional: this package (README, Why gain: proportional)",
        ),
    )
    proportional_gain: float = Field(
        4.0,
        ge=0,
        description=doc(
            "`proportional`: strength per unit relative error, capped at 1 (floor 0.1).",
            "this package, tuned on the built-in task",
        ),
    )
    integral_gain: float = Field(
        0.0,
        ge=0,
        description=doc(
            "`proportional`: each step adds this x the relative error (H* - H) / H* to a "
            "standing push (only within 25% of H*, kept within +-0.5), which removes the "
            "offset a plain proportional push leaves against a steady drift; 0 turns it off.",
            "this package, measured on the built-in task (README, The CPU demo)",
        ),
    )


class ExtraRolloutConfig(_Section):
    """How many extra responses the temperature pass generates."""

    budget: Literal["auto", "fixed"] = Field(
        "auto",
        description=doc(
            "`auto`: size the pass from the positive rate seen at that temperature; "
            "`fixed`: a quarter of the prompts x n, every step.",
            "fixed: the authors' code (597358816/AEPO); auto: this package",
        ),
    )
    oversample: float = Field(
        1.3,
        ge=1,
        description=doc("`auto`: generate this many times the expected need.", "this package"),
    )
    min_samples: int = Field(
        8,
        ge=0,
        description=doc("`auto`: never generate fewer extra samples than this.", "this package"),
    )
    max_fraction: float = Field(
        0.5,
        gt=0,
        description=doc(
            "`auto`: at most this fraction of the GRPO rows as extra samples.", "this package"
        ),
    )


class EntropyAdvConfig(_Section):
    """The Entropy-Adv baseline's constants."""

    beta: float = Field(
        0.4, ge=0, description=doc("Entropy-Adv: weight of pi_old's token entropy.", PAPER)
    )
    kappa: float = Field(
        2.0,
        gt=0,
        description=doc("Entropy-Adv: the bonus is capped at abs(A) / kappa.", PAPER),
    )


REMOVED_KEYS: dict[str, str] = {
    "entropy_ema": "removed: no measurement needed smoothing (the raw measurement is used)",
    "integral_gain": "removed: the integral term was never enabled by a measured config",
    "integral_limit": "removed with integral_gain",
    "min_strength": "removed: the proportional strength's floor is fixed at 0.1",
    "scale_budget": "removed: gain: proportional always scales the budget",
    "scale_temperature": "removed: the temperature is always T_high / T_low",
    "advantage_threshold": "removed: positive_filter: advantage keeps group advantage > 0.05",
    "fixed_prompt_fraction": "removed: extra_rollout.budget: fixed uses the authors' 1/4",
    "prior_positive_rate": "removed: the auto budget assumes 0.5 before it observes a rate",
    "rollout_budget": "moved to extra_rollout.budget",
    "oversample": "moved to extra_rollout.oversample",
    "min_extra_samples": "moved to extra_rollout.min_samples",
    "max_extra_fraction": "moved to extra_rollout.max_fraction",
    "proportional_gain": "moved to controller.proportional_gain",
    "gain": "moved to controller.gain",
    "entropy_adv_beta": "moved to entropy_adv.beta",
    "entropy_adv_kappa": "moved to entropy_adv.kappa",
}
"""keys an older config may still carry -> what replaced them"""


class AEPOConfig(_Section):
    """Everything that defines the AEPO regulariser and the paper's baselines.

    Defaults are the paper's (Table 4): T_high 1.2, T_low 0.8, at most 60 positives when
    raising entropy and 30 when lowering it, alpha 1.
    """

    algorithm: Algorithm = Field(
        "aepo",
        description=doc(
            "`grpo`, `aepo`, `entropy_reg`, `entropy_adv`, `aepo_no_temperature`, "
            "`aepo_advantage` (see Algorithms).",
            f"{PAPER} Sec. 4 and 5",
        ),
    )
    target_entropy: float = Field(
        0.5, gt=0, description=doc("H*, token-mean entropy of pi_old at T = 1.", PAPER)
    )
    t_high: float = Field(
        1.2,
        gt=0,
        le=MAX_TEMPERATURE,
        description=doc(
            "temperature of the extra samples when H < H* (at most 2: vLLM's limit).",
            f"{PAPER} Table 4",
        ),
    )
    t_low: float = Field(
        0.8,
        gt=0,
        description=doc("temperature of the extra samples when H >= H*.", f"{PAPER} Table 4"),
    )
    samples_up: int = Field(
        60,
        ge=0,
        description=doc("most REINFORCE samples per step when H < H*.", f"{PAPER} Table 4"),
    )
    samples_down: int = Field(
        30,
        ge=0,
        description=doc("most REINFORCE samples per step when H >= H*.", f"{PAPER} Table 4"),
    )
    alpha: float = Field(
        1.0, ge=0, description=doc("weight of the REINFORCE term in Eq. 1.", f"{PAPER} Eq. 1")
    )
    alpha_meaning: Literal["paper", "batch_share"] = Field(
        "paper",
        description=doc(
            "`paper`: the REINFORCE term is alpha x the mean over its samples, whatever the "
            "batch size, loss_agg_mode, mini-batches and ranks (rows are weighted); "
            "`batch_share`: rows carry alpha * R and weigh what the aggregation gives them "
            "(under token-mean, their share of the batch's tokens).",
            f"paper: {PAPER} Eq. 1; batch_share: the authors' code; default chosen by "
            "scripts/alpha_meaning.py (README)",
        ),
    )
    clip_ratio: float = Field(
        0.2,
        gt=0,
        lt=1,
        description=doc("epsilon of the clipped REINFORCE term (and of PPO).", f"{PAPER} Eq. 1"),
    )
    positive_filter: Literal["reward", "advantage"] = Field(
        "reward",
        description=doc(
            "`reward`: samples with R >= reward_threshold enter the term; `advantage`: "
            "group advantage among the temperature samples > 0.05.",
            f"reward: {PAPER} Sec. 3; advantage: the authors' code",
        ),
    )
    reward_threshold: float = Field(
        1.0, description=doc("reward counted as positive.", f"{PAPER} (binary R = 1)")
    )
    entropy_source: Literal["previous_step", "current_batch"] = Field(
        "previous_step",
        description=doc(
            "`previous_step`: choose the temperature from the last measurement, so the extras "
            "ride in the same rollout call, then size their push (budget, strength; none if "
            "the target was crossed) from this step's measurement; `current_batch`: measure "
            "first, then a second pass. Step 1 always measures first.",
            "this package (the authors' code measures the current batch)",
        ),
    )
    merge: Literal["replace_zero_advantage", "replace_first", "append"] = Field(
        "replace_zero_advantage",
        description=doc(
            "where the REINFORCE rows go: over zero-advantage GRPO rows (no gradient lost), "
            "over the first rows, or appended with no-op padding.",
            "replace_first: the authors' code; the others: this package",
        ),
    )
    seed: int = Field(
        0,
        description=doc(
            "seeds the choice of prompts and of positives beyond the budget.", "this package"
        ),
    )
    controller: ControllerConfig = Field(default_factory=ControllerConfig)
    extra_rollout: ExtraRolloutConfig = Field(default_factory=ExtraRolloutConfig)
    entropy_coef: float = Field(
        0.015, ge=0, description=doc("Entropy-Reg: lambda of the entropy bonus.", PAPER)
    )
    entropy_adv: EntropyAdvConfig = Field(default_factory=EntropyAdvConfig)

    @model_validator(mode="before")
    @classmethod
    def _removed_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            gone = [k for k in data if k in REMOVED_KEYS]
            if gone:
                raise ValueError("; ".join(f"{k}: {REMOVED_KEYS[k]}" for k in gone))
        return data

    @model_validator(mode="after")
    def _check_consistency(self) -> AEPOConfig:
        if not self.t_high > self.t_low:
            raise ValueError(
                f"t_high must be > t_low, got t_high={self.t_high}, t_low={self.t_low}"
            )
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
        elif e["type"] == "value_error" and not loc:
            lines.append(f"{where}: {e['msg'].removeprefix('Value error, ')}")
        else:
            lines.append(f"{where}: {e['msg']} (got {value!r})")
    return "\n  ".join(lines)


def load_aepo_config(raw: dict[str, Any] | None, source: str = "aepo") -> AEPOConfig:
    """Validate a plain mapping into :class:`AEPOConfig`, with errors naming ``source.key``."""
    try:
        return AEPOConfig.model_validate(dict(raw or {}))
    except ValidationError as err:
        raise ConfigError("invalid AEPO config:\n  " + validation_problems(err, source)) from None
