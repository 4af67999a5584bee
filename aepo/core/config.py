"""Validated AEPO settings shared by both engines.

Every key is documented once, here: what it does, its default and where it comes from
(``config_docs.py`` writes the README's table and the ``aepo:`` block of ``aepo_base.yaml``
from these descriptions). The paper's knobs are top-level, so Hydra overrides stay short
(``aepo.target_entropy=0.5``); the controller's tuning, the extra pass's sizing and
the baselines' constants sit in small sections. A typo or a non-finite number
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
    "clip_cov",
    "kl_cov",
    "adaptive_entropy",
    "top_entropy",
    "dcpo",
    "entropic",
    "entrocraft",
]
ALGORITHMS: tuple[str, ...] = Algorithm.__args__  # type: ignore[attr-defined]

PAPER = "arXiv 2510.08141"
COV_PAPER = "arXiv 2505.22617"
"""Clip-Cov and KL-Cov: The Entropy Mechanism of RL for Reasoning LMs (PRIME-RL)"""
SKYWORK = "arXiv 2505.22312"
"""adaptive entropy control: Skywork Open Reasoner 1 (Skywork-OR1)"""
TOP_ENTROPY_PAPER = "arXiv 2506.01939"
"""the 80/20 rule: Beyond the 80/20 Rule, high-entropy minority tokens"""
DCPO_PAPER = "arXiv 2601.12730"
"""DCPO: Distribution-Centric Policy Optimization, by the AEPO authors"""
DCPO_CODE = "github.com/597358816/AEPO 15dc716 (verl/trainer/ray_trainer.py)"
ENTROPIC_PAPER = "arXiv 2511.15248"
"""EntroPIC: entropy stabilization with proportional-integral control (Tencent Hunyuan)"""
ENTROPIC_CODE = "github.com/yk7333/EntroPIC 2470730 (dp_actor.py, core_algos.py)"
ENTROCRAFT_PAPER = "arXiv 2604.26326"
"""Entrocraft: Addressing Performance Saturation for LLM RL via Precise Entropy Curve Control"""
ENTROCRAFT_CODE = "github.com/lblaoke/entrocraft 26165bd (verl/trainer/ppo/core_algos.py)"
MAX_TEMPERATURE = 2.0
"""vLLM's sampler refuses temperatures above 2 inside a rollout worker, mid-run"""


def doc(what: str, source: str) -> str:
    return f"{what} Source: {source}."


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class ControllerConfig(_Section):
    """How hard the controller pushes, and when it stops pushing entropy down."""

    gain: Literal["fixed", "proportional"] = Field(
        "fixed",
        description=doc(
            "`fixed`: the paper's bang-bang rule, full budget and T_high/T_low every step; "
            "`proportional`: the push (budget, and alpha) scales with the error |H - H*| in "
            "units of max(H*, 1 nat), so it fades near the target and its gain per nat does "
            "not grow as H* falls.",
            f"fixed: {PAPER} Sec. 3; proportional: this package (docs/configuration.md, Why gain: proportional)",
        ),
    )
    proportional_gain: float = Field(
        4.0,
        ge=0,
        description=doc(
            "`proportional`: strength per unit error, capped at 1; no floor, so the push "
            "goes to zero at the target.",
            "this package, tuned on the built-in task",
        ),
    )
    integral_gain: float = Field(
        0.0,
        ge=0,
        description=doc(
            "`proportional`: each step adds this x the error to a standing push (kept within "
            "+-0.5; within 25% of H* only, and not while the push is saturated or dropped; "
            "beyond, it may only shrink), which removes the offset a plain proportional push "
            "leaves against a steady drift; 0 turns it off.",
            "this package, measured on the built-in task (docs/demo.md)",
        ),
    )
    guard_fraction: float = Field(
        0.5,
        ge=0,
        lt=1,
        description=doc(
            "reward guard: when the moving average of the reward (10 steps) falls below this "
            "fraction of its best, or after `guard_patience` steps without a positive sample, "
            "no push lowers entropy until the average is back above halfway to its best; "
            "logged as aepo/guard, warned once; 0 turns the guard off.",
            "this package (docs/low_targets.md)",
        ),
    )
    guard_patience: int = Field(
        5,
        ge=1,
        description=doc(
            "reward guard: steps in a row without a positive sample in the GRPO group that "
            "turn it on.",
            "this package (docs/low_targets.md)",
        ),
    )
    revival_step: float = Field(
        0.005,
        ge=0,
        le=1,
        description=doc(
            "reward guard: after `guard_patience` steps without a positive, REINFORCE has no "
            "sample to act on, so an entropy bonus revives the policy: its coefficient grows "
            "by this each such step while the entropy is at or below the run's first "
            "measurement, shrinks by it above (within [0, 1]) and is 0 again once a positive "
            "returns; logged as aepo/revival_coef; 0 turns it off.",
            f"the step of adaptive entropy control, {SKYWORK}; this package (docs/low_targets.md)",
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


class EntropyRegConfig(_Section):
    """The Entropy-Reg baseline's constant."""

    coef: float = Field(
        0.015,
        ge=0,
        description=doc(
            "Entropy-Reg: lambda of the entropy bonus -lambda * H(pi_theta) added to the loss.",
            PAPER,
        ),
        json_schema_extra={"verl": "actor_rollout_ref.actor.entropy_coeff"},
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


class ClipCovConfig(_Section):
    """Clip-Cov's constants (verl's ``clip_cov`` policy loss does the work)."""

    ratio: float = Field(
        2e-4,
        gt=0,
        lt=1,
        description=doc(
            "Clip-Cov: fraction of the batch's tokens, drawn among those whose covariance "
            "(A - mean A)(log pi - mean log pi) lies in (lower, upper), whose gradient is "
            "detached.",
            f"{COV_PAPER}; verl 0.9.1 policy_loss.clip_cov_ratio",
        ),
        json_schema_extra={"verl": "actor_rollout_ref.actor.policy_loss.clip_cov_ratio"},
    )
    lower: float = Field(
        1.0,
        description=doc(
            "Clip-Cov: lower bound of the covariance a detached token may have.",
            f"{COV_PAPER}; verl 0.9.1 policy_loss.clip_cov_lb",
        ),
        json_schema_extra={"verl": "actor_rollout_ref.actor.policy_loss.clip_cov_lb"},
    )
    upper: float = Field(
        5.0,
        description=doc(
            "Clip-Cov: upper bound of the covariance a detached token may have.",
            f"{COV_PAPER}; verl 0.9.1 policy_loss.clip_cov_ub",
        ),
        json_schema_extra={"verl": "actor_rollout_ref.actor.policy_loss.clip_cov_ub"},
    )

    @model_validator(mode="after")
    def _bounds(self) -> ClipCovConfig:
        if not self.upper > self.lower:
            raise ValueError(f"upper must be > lower, got lower={self.lower}, upper={self.upper}")
        return self


class KLCovConfig(_Section):
    """KL-Cov's constants (verl's ``kl_cov`` policy loss does the work)."""

    ratio: float = Field(
        2e-4,
        gt=0,
        lt=1,
        description=doc(
            "KL-Cov: fraction of the batch's tokens with the largest covariance that get the "
            "KL penalty coef * |log pi - log pi_old|.",
            f"{COV_PAPER}; verl 0.9.1 policy_loss.kl_cov_ratio",
        ),
        json_schema_extra={"verl": "actor_rollout_ref.actor.policy_loss.kl_cov_ratio"},
    )
    coef: float = Field(
        1.0,
        gt=0,
        description=doc(
            "KL-Cov: weight of that penalty (verl 0.9.1's config default is 0.1; the authors' "
            "code and run scripts use 1).",
            f"{COV_PAPER}, github.com/PRIME-RL/Entropy-Mechanism-of-RL (ppo_kl_coef=1)",
        ),
        json_schema_extra={"verl": "actor_rollout_ref.actor.policy_loss.ppo_kl_coef"},
    )


class AdaptiveEntropyConfig(_Section):
    """Adaptive entropy control: an entropy bonus whose coefficient chases target_entropy."""

    initial_coef: float = Field(
        0.0,
        ge=0,
        description=doc("adaptive_entropy: the coefficient c before the first update.", SKYWORK),
    )
    step: float = Field(
        0.005,
        gt=0,
        description=doc(
            "adaptive_entropy: c grows by this when the measured entropy is <= target_entropy "
            "and shrinks by it otherwise.",
            f"{SKYWORK}; TRL 1.16 entropy_coef_delta",
        ),
    )
    min_coef: float = Field(
        0.0,
        ge=0,
        description=doc(
            "adaptive_entropy: lower bound of c.", f"{SKYWORK}; TRL 1.16 entropy_coef_min"
        ),
    )
    max_coef: float = Field(
        1.0,
        ge=0,
        description=doc(
            "adaptive_entropy: upper bound of c.", f"{SKYWORK}; TRL 1.16 entropy_coef_max"
        ),
    )
    update: Literal["optimizer_step", "training_step"] = Field(
        "optimizer_step",
        description=doc(
            "`optimizer_step`: after every optimizer step, from that mini-batch's entropy of "
            "pi_theta (TRL); `training_step`: once per step, from pi_old's token-mean entropy "
            "(the one the AEPO controller reads). The verl engine supports only "
            "`training_step` (its actor worker holds the coefficient fixed for a whole update).",
            f"optimizer_step: TRL 1.16 (GRPOTrainer, use_adaptive_entropy); {SKYWORK}",
        ),
    )

    @model_validator(mode="after")
    def _range(self) -> AdaptiveEntropyConfig:
        if not self.min_coef <= self.initial_coef <= self.max_coef:
            raise ValueError(
                "need min_coef <= initial_coef <= max_coef, got "
                f"{self.min_coef}, {self.initial_coef}, {self.max_coef}"
            )
        return self


class TopEntropyConfig(_Section):
    """The 80/20 rule: policy gradient only through the batch's highest-entropy tokens."""

    quantile: float = Field(
        0.2,
        gt=0,
        le=1,
        description=doc(
            "top_entropy: share of the step's response tokens, those with the highest pi_old "
            "entropy (threshold: the batch's (1 - quantile) quantile), that keep their "
            "advantage; the others get advantage 0 but still count in the loss's denominator.",
            f"{TOP_ENTROPY_PAPER} (rho = 0.2); TRL 1.16 top_entropy_quantile",
        ),
    )


class DCPOConfig(_Section):
    """DCPO: the GRPO advantages mixed with the ratio of pi_old at T to pi_old at T = 1."""

    t_high: float = Field(
        1.2,
        gt=0,
        le=MAX_TEMPERATURE,
        description=doc(
            "dcpo: temperature of the second old-log-prob pass when H <= H* (the code's "
            "`entropy <= entropy_base`).",
            DCPO_CODE,
        ),
    )
    t_low: float = Field(
        0.8,
        gt=0,
        description=doc("dcpo: temperature of that pass when H > H*.", DCPO_CODE),
    )
    score_threshold: float = Field(
        0.05,
        description=doc(
            "dcpo: a sample whose summed score exceeds this is positive: it gets the "
            "exp(logp_T - logp_1) term, and the positives' share divides c.",
            f"{DCPO_CODE} (_compute_bool_reward_by_score threshold)",
        ),
    )
    max_gap: float = Field(
        0.1,
        gt=0,
        description=doc(
            "dcpo: |H* - H| is capped at this in c = min(|H* - H|, max_gap) / positive share; "
            "the mix is a = c / (c + 1).",
            DCPO_CODE,
        ),
    )

    @model_validator(mode="after")
    def _order(self) -> DCPOConfig:
        if not self.t_high > self.t_low:
            raise ValueError(
                f"t_high must be > t_low, got t_high={self.t_high}, t_low={self.t_low}"
            )
        return self


class EntroPICConfig(_Section):
    """EntroPIC: a PI controller on the entropy error weighs the high-probability tokens of
    positive and negative samples."""

    proportional_gain: float = Field(
        1.0,
        ge=0,
        description=doc(
            "entropic: K_p, alpha = clip(K_p (H - H*) + K_i sum(H - H*), -max_alpha, max_alpha).",
            f"{ENTROPIC_CODE} (entropy_control_p)",
        ),
    )
    integral_gain: float = Field(
        0.01,
        ge=0,
        description=doc(
            "entropic: K_i, on the error summed over every earlier controller update.",
            f"{ENTROPIC_CODE} (entropy_control_i)",
        ),
    )
    max_alpha: float = Field(
        1.0,
        gt=0,
        description=doc("entropic: alpha is clipped to [-max_alpha, max_alpha].", ENTROPIC_CODE),
    )
    high_prob_threshold: float = Field(
        0.95,
        gt=0,
        lt=1,
        description=doc(
            "entropic: tokens pi_theta gives more than this probability get the extra term "
            "alpha * (-ratio * |A|): alpha > 0 (entropy above H*) sharpens them, alpha < 0 "
            "flattens them.",
            f"{ENTROPIC_CODE} (high_prob_thresh)",
        ),
    )
    update: Literal["optimizer_step", "training_step"] = Field(
        "optimizer_step",
        description=doc(
            "`optimizer_step`: alpha from each mini-batch's entropy of pi_theta, then the "
            "integral moves (the code, per micro-batch); `training_step`: once per step from "
            "pi_old's token-mean entropy. The verl engine supports only `training_step` (its "
            "actor worker holds the loss for a whole update).",
            ENTROPIC_CODE,
        ),
    )


class EntrocraftConfig(_Section):
    """Entrocraft: an entropy band around H*; above it only the positive samples train
    (RAFT++), below it only the negative ones (NSR), inside it GRPO."""

    variant: Literal["band", "fixed"] = Field(
        "band",
        description=doc(
            "`band`: the code's `grpo_range` estimators, band [H* - band_width/2, H* + "
            "band_width/2] (its linear and cosine bound pairs are `target_schedule` kinds); "
            "`fixed`: its `entropic` estimator, outcome advantages +-1 weighted 1 + alpha on "
            "positives and 1 - alpha on negatives, alpha = state + (H - H*), state += 0.01 (H - H*).",
            f"{ENTROCRAFT_CODE} (compute_grpo_range_*, compute_entropic_outcome_advantage)",
        ),
    )
    band_width: float = Field(
        0.1,
        ge=0,
        description=doc(
            "`band`: upper minus lower bound, centred on H* (0: a single level).",
            f"{ENTROCRAFT_CODE} (every released schedule: upper = lower + 0.1)",
        ),
    )

    @model_validator(mode="after")
    def _width_needs_band(self) -> EntrocraftConfig:
        if self.variant == "fixed" and self.band_width != 0.1:
            raise ValueError(
                f"variant fixed has no band: band_width={self.band_width} would be ignored, "
                "remove it"
            )
        return self


class BaselinesConfig(_Section):
    """The field's entropy controls, one section each (used by the algorithm of that name)."""

    entropy_reg: EntropyRegConfig = Field(default_factory=EntropyRegConfig)
    entropy_adv: EntropyAdvConfig = Field(default_factory=EntropyAdvConfig)
    clip_cov: ClipCovConfig = Field(default_factory=ClipCovConfig)
    kl_cov: KLCovConfig = Field(default_factory=KLCovConfig)
    adaptive_entropy: AdaptiveEntropyConfig = Field(default_factory=AdaptiveEntropyConfig)
    top_entropy: TopEntropyConfig = Field(default_factory=TopEntropyConfig)
    dcpo: DCPOConfig = Field(default_factory=DCPOConfig)
    entropic: EntroPICConfig = Field(default_factory=EntroPICConfig)
    entrocraft: EntrocraftConfig = Field(default_factory=EntrocraftConfig)


class TargetScheduleConfig(_Section):
    """A target that moves with the step, from ``start`` to ``target_entropy``."""

    kind: Literal["constant", "linear", "cosine"] = Field(
        description=doc(
            "`linear` or `cosine` from `start` at step 1 to `target_entropy` after `steps` "
            "steps, held there afterwards; `constant`: `target_entropy` at every step.",
            "this package; Entrocraft reports linear annealing as its best schedule",
        ),
    )
    start: float | None = Field(
        None,
        gt=0,
        description=doc("H* at step 1 (`linear`, `cosine`).", "this package"),
    )
    steps: int | None = Field(
        None,
        ge=1,
        description=doc(
            "steps the schedule takes to reach `target_entropy` (`linear`, `cosine`).",
            "this package",
        ),
    )

    @model_validator(mode="before")
    @classmethod
    def _end_is_target_entropy(cls, data: Any) -> Any:
        if isinstance(data, dict) and "end" in data:
            raise ValueError(
                f"'end' is not a key: the schedule ends at aepo.target_entropy, set that "
                f"instead (got end={data['end']!r})"
            )
        return data

    @model_validator(mode="after")
    def _check_kind(self) -> TargetScheduleConfig:
        given = [k for k in ("start", "steps") if getattr(self, k) is not None]
        if self.kind == "constant" and given:
            raise ValueError(
                f"kind constant holds target_entropy at every step; "
                f"{' and '.join(given)} would be ignored: remove them"
            )
        missing = [k for k in ("start", "steps") if getattr(self, k) is None]
        if self.kind != "constant" and missing:
            raise ValueError(f"kind {self.kind} needs {' and '.join(missing)}")
        return self


class AEPOConfig(_Section):
    """Everything that defines the AEPO regulariser and the paper's baselines.

    Defaults are the paper's (Table 4): T_high 1.2, T_low 0.8, at most 60 positives when
    raising entropy and 30 when lowering it, alpha 1.
    """

    algorithm: Algorithm = Field(
        "aepo",
        description=doc(
            "`grpo`, `aepo`, `entropy_reg`, `entropy_adv`, `aepo_no_temperature`, "
            "`aepo_advantage`, `clip_cov`, `kl_cov`, `adaptive_entropy`, `top_entropy`, `dcpo`, "
            "`entropic`, `entrocraft` (see Algorithms).",
            f"{PAPER} Sec. 4 and 5; {COV_PAPER}; {SKYWORK}; {TOP_ENTROPY_PAPER}; {DCPO_PAPER}; "
            f"{ENTROPIC_PAPER}; {ENTROCRAFT_PAPER}",
        ),
    )
    target_entropy: float = Field(
        0.5,
        gt=0,
        description=doc(
            "H*, token-mean entropy of pi_old at T = 1 (also the target of adaptive_entropy, dcpo, entropic and "
            "the centre of entrocraft's band; with `target_schedule`: where the schedule ends).",
            PAPER,
        ),
    )
    target_schedule: TargetScheduleConfig | None = Field(
        None,
        description=doc(
            "a target that changes with the step, one line of YAML: "
            "`{kind: linear, start: 1.0, steps: 200}` anneals H* from 1.0 to "
            "`target_entropy` over 200 steps (kinds: constant, linear, cosine); null: "
            "`target_entropy` at every step. Logged as aepo/target_entropy.",
            "this package",
        ),
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
            "scripts/alpha_meaning.py (docs/alpha.md)",
        ),
    )
    clip_ratio: float = Field(
        0.2,
        gt=0,
        lt=1,
        description=doc("epsilon of the clipped REINFORCE term (and of PPO).", f"{PAPER} Eq. 1"),
        json_schema_extra={"verl": "actor_rollout_ref.actor.clip_ratio"},
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
    baselines: BaselinesConfig = Field(default_factory=BaselinesConfig)

    @model_validator(mode="after")
    def _check_consistency(self) -> AEPOConfig:
        if not self.t_high > self.t_low:
            raise ValueError(
                f"t_high must be > t_low, got t_high={self.t_high}, t_low={self.t_low}"
            )
        ignored = ignored_keys(self)
        if ignored:
            raise ValueError(
                f"algorithm {self.algorithm} does not read {', '.join(ignored)}: remove "
                f"{'it' if len(ignored) == 1 else 'them'} (a key the algorithm ignores "
                "would change nothing)"
            )
        return self


_EXTRA_ROLLOUT_KEYS = frozenset(
    {
        "t_high",
        "t_low",
        "samples_up",
        "samples_down",
        "alpha",
        "alpha_meaning",
        "positive_filter",
        "reward_threshold",
        "entropy_source",
        "merge",
        "seed",
        "controller",
        "extra_rollout",
    }
)
_READ_BY_ALL = frozenset({"algorithm", "target_entropy", "target_schedule", "clip_ratio"})
"""every algorithm logs the target (the line its entropy is judged against), trains with
PPO-clip (Clip-Cov and KL-Cov clip with the same epsilon) and generates its GRPO rows"""
READS: dict[str, frozenset[str]] = {
    algorithm: _READ_BY_ALL
    | ({f"baselines.{algorithm}"} if algorithm in BaselinesConfig.model_fields else set())
    for algorithm in ALGORITHMS
}
"""top-level keys (and ``baselines.<name>`` sections) each algorithm reads"""
READS["aepo"] = _READ_BY_ALL | _EXTRA_ROLLOUT_KEYS
# the ablation samples the extra pass at T = 1
READS["aepo_no_temperature"] = READS["aepo"] - {"t_high", "t_low"}
# the ablation uses every sample's group advantage, with no positive filter
READS["aepo_advantage"] = READS["aepo"] - {"positive_filter", "reward_threshold"}


def ignored_keys(cfg: AEPOConfig) -> list[str]:
    """Keys set away from their defaults that ``cfg.algorithm`` does not read. A key at its
    default is not reported: verl's base YAML spells every default out."""
    reads = READS[cfg.algorithm]
    default = AEPOConfig.model_construct()
    ignored = [
        key
        for key in AEPOConfig.model_fields
        if key != "baselines" and key not in reads and getattr(cfg, key) != getattr(default, key)
    ]
    ignored += [
        f"baselines.{name}"
        for name in BaselinesConfig.model_fields
        if f"baselines.{name}" not in reads
        and getattr(cfg.baselines, name) != getattr(default.baselines, name)
    ]
    return ignored


def verl_owned_keys() -> dict[str, str]:
    """Dotted ``aepo`` key -> the verl key a verl run sets instead (the local engine, which
    has no verl config, reads the ``aepo`` key)."""
    owned = {}

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            extra = field.json_schema_extra
            if isinstance(extra, dict) and "verl" in extra:
                owned[prefix + name] = str(extra["verl"])
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, prefix + name + ".")

    walk(AEPOConfig, "")
    return owned


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
        elif e["type"] == "value_error" and (not loc or isinstance(value, dict)):
            # a section's own check: its message names the keys; the whole mapping is noise
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
